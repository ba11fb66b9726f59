//! The counters of one node: exact window tallies per account, in memory. They count every
//! call with `backend = "local"`, and the calls counted while the cluster store is out of
//! reach otherwise (written back when it returns). A snapshot of them is what a restart
//! keeps (`state::counters`).
use super::{Pacing, QuotaLimits, Usage, Windows};
use crate::screen::CounterReading;
use crate::screen::hash::NumberMap;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug)]
struct Tally {
    window: i64,
    count: u64,
}

impl Tally {
    fn roll(&mut self, window: i64) {
        if self.window != window {
            self.window = window;
            self.count = 0;
        }
    }
}

#[derive(Debug)]
struct NumberTally {
    window: i64,
    counts: NumberMap<u32>,
}

impl NumberTally {
    fn roll(&mut self, window: i64) {
        if self.window != window {
            self.window = window;
            self.counts.clear();
        }
    }
    fn get(&self, n: u64) -> u64 {
        self.counts.get(&n).copied().map_or(0, u64::from)
    }
    /// Whether counting `n` needs a new entry that the cap does not allow.
    fn full_for(&self, n: u64, max: usize) -> bool {
        self.counts.len() >= max && !self.counts.contains_key(&n)
    }
    fn add(&mut self, n: u64) {
        let c = self.counts.entry(n).or_insert(0);
        *c = c.saturating_add(1);
    }
    fn remove(&mut self, window: i64, n: u64) {
        if self.window != window {
            return;
        }
        if let Some(c) = self.counts.get_mut(&n) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.counts.remove(&n);
            }
        }
    }
}

/// Window counters of one account; they survive reloads.
#[derive(Debug)]
pub struct Counters {
    hour: Tally,
    day: Tally,
    caller_day: NumberTally,
    callee_day: NumberTally,
    callee_week: NumberTally,
    /// The account's hour and day counts in the cluster store when it last answered.
    seen_hour: Tally,
    seen_day: Tally,
}

impl Default for Counters {
    fn default() -> Self {
        let tally = || Tally { window: i64::MIN, count: 0 };
        let numbers = || NumberTally { window: i64::MIN, counts: NumberMap::default() };
        Counters {
            hour: tally(),
            day: tally(),
            caller_day: numbers(),
            callee_day: numbers(),
            callee_week: numbers(),
            seen_hour: tally(),
            seen_day: tally(),
        }
    }
}

impl Counters {
    fn roll(&mut self, w: &Windows) {
        self.seen_hour.roll(w.hour);
        self.seen_day.roll(w.day);
        self.hour.roll(w.hour);
        self.day.roll(w.day);
        self.caller_day.roll(w.day);
        self.callee_day.roll(w.day);
        self.callee_week.roll(w.week);
    }

    /// Count one call: always in the hour and day, in a number map when its cap is set.
    fn count(&mut self, limits: &QuotaLimits, caller: u64, callee: u64) {
        self.hour.count += 1;
        self.day.count += 1;
        if limits.per_caller_id_per_day.is_some() {
            self.caller_day.add(caller);
        }
        if limits.per_callee_per_day.is_some() {
            self.callee_day.add(callee);
        }
        if limits.per_callee_per_week.is_some() {
            self.callee_week.add(callee);
        }
    }

    fn snapshot(&self) -> CountersSnapshot {
        let numbers = |t: &NumberTally| (t.window, t.counts.iter().map(|(&n, &k)| (n, k)).collect());
        CountersSnapshot {
            hour: (self.hour.window, self.hour.count),
            day: (self.day.window, self.day.count),
            caller_day: numbers(&self.caller_day),
            callee_day: numbers(&self.callee_day),
            callee_week: numbers(&self.callee_week),
            seen: (self.seen_hour.count, self.seen_day.count),
        }
    }
}

/// Counters of one account: window tallies behind one lock.
#[derive(Debug, Default)]
pub struct AccountCounters {
    counters: Mutex<Counters>,
}

/// The counts of one account's current windows, as saved and written back. Numbers are
/// (number, count) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersSnapshot {
    pub hour: (i64, u64),
    pub day: (i64, u64),
    pub caller_day: (i64, Vec<(u64, u32)>),
    pub callee_day: (i64, Vec<(u64, u32)>),
    pub callee_week: (i64, Vec<(u64, u32)>),
    /// The hour and day counts of the cluster store as last known here (of the windows
    /// `hour.0` and `day.0`), so a restart during an outage keeps judging shares by them.
    #[serde(default)]
    pub seen: (u64, u64),
}

impl CountersSnapshot {
    /// Whether it holds nothing worth keeping (no count, no cluster figure).
    pub fn is_empty(&self) -> bool {
        self.seen == (0, 0) && !self.has_counts()
    }

    /// Whether it holds a count of calls (something to write back).
    pub fn has_counts(&self) -> bool {
        !(self.hour.1 == 0
            && self.day.1 == 0
            && self.caller_day.1.is_empty()
            && self.callee_day.1.is_empty()
            && self.callee_week.1.is_empty())
    }
}

impl AccountCounters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Check every limit for a call from `caller` to `callee`; when all pass, count it.
    /// `readings` receives each configured cap with its value (including this call if it
    /// passed). Returns whether the call is within quota.
    #[allow(clippy::too_many_arguments)]
    pub fn check_and_count(
        &self,
        limits: &QuotaLimits,
        pacing: Option<(&Pacing, SystemTime)>,
        w: &Windows,
        caller: u64,
        callee: u64,
        max_tracked: usize,
        readings: &mut Vec<CounterReading>,
    ) -> bool {
        let mut c = self.lock();
        c.roll(w);
        let caps = [
            ("account_per_hour", c.hour.count, limits.per_hour),
            ("account_per_day", c.day.count, limits.per_day),
            ("caller_id_per_day", c.caller_day.get(caller), limits.per_caller_id_per_day),
            ("callee_per_day", c.callee_day.get(callee), limits.per_callee_per_day),
            ("callee_per_week", c.callee_week.get(callee), limits.per_callee_per_week),
        ];
        let mut ok = caps.iter().all(|&(_, value, limit)| limit.is_none_or(|l| value < l));
        let tracked = [
            (limits.per_caller_id_per_day.is_some(), &c.caller_day, caller),
            (limits.per_callee_per_day.is_some(), &c.callee_day, callee),
            (limits.per_callee_per_week.is_some(), &c.callee_week, callee),
        ];
        let full = tracked.iter().find(|(on, t, n)| *on && t.full_for(*n, max_tracked));
        if let Some((_, t, _)) = full {
            ok = false;
            readings.push(CounterReading {
                name: "tracked_numbers",
                value: t.counts.len() as u64,
                limit: max_tracked as u64,
            });
        }
        if ok && let Some(refused) = pacing.and_then(|(p, now)| p.refusal(limits, now)) {
            ok = false;
            readings.push(refused);
        }
        let step = u64::from(ok);
        for (name, value, limit) in caps {
            if let Some(limit) = limit {
                readings.push(CounterReading { name, value: value + step, limit });
            }
        }
        if ok {
            c.count(limits, caller, callee);
        }
        ok
    }

    /// Count a call without checking any cap (the cluster store admitted it, or is out of
    /// reach with `on_failure = "open"`).
    /// A number map that is full (`max_tracked`) does not take a new number: the call is
    /// still counted in the hour and day, so memory stays bounded whatever callees arrive.
    pub fn add(&self, limits: &QuotaLimits, w: &Windows, caller: u64, callee: u64, max_tracked: usize) {
        let mut c = self.lock();
        c.roll(w);
        let room = |t: &NumberTally, n| !t.full_for(n, max_tracked);
        let limits = QuotaLimits {
            per_caller_id_per_day: limits.per_caller_id_per_day.filter(|_| room(&c.caller_day, caller)),
            per_callee_per_day: limits.per_callee_per_day.filter(|_| room(&c.callee_day, callee)),
            per_callee_per_week: limits.per_callee_per_week.filter(|_| room(&c.callee_week, callee)),
            ..*limits
        };
        c.count(&limits, caller, callee);
    }

    /// Take back a call counted by `check_and_count` at windows `w` that was not forwarded
    /// after all. Windows that have ended since are left alone (their counts are gone).
    pub fn uncount(&self, limits: &QuotaLimits, w: &Windows, caller: u64, callee: u64) {
        let mut c = self.lock();
        if c.hour.window == w.hour {
            c.hour.count = c.hour.count.saturating_sub(1);
        }
        if c.day.window == w.day {
            c.day.count = c.day.count.saturating_sub(1);
        }
        if limits.per_caller_id_per_day.is_some() {
            c.caller_day.remove(w.day, caller);
        }
        if limits.per_callee_per_day.is_some() {
            c.callee_day.remove(w.day, callee);
        }
        if limits.per_callee_per_week.is_some() {
            c.callee_week.remove(w.week, callee);
        }
    }

    /// Current usage as of `w`, without changing anything.
    pub fn usage(&self, w: &Windows) -> Usage {
        let c = self.lock();
        let tally = |t: &Tally, window| if t.window == window { t.count } else { 0 };
        let numbers = |t: &NumberTally, window| {
            if t.window == window { t.counts.len() as u64 } else { 0 }
        };
        Usage {
            calls_this_hour: tally(&c.hour, w.hour),
            calls_today: tally(&c.day, w.day),
            caller_ids_today: numbers(&c.caller_day, w.day),
            callees_today: numbers(&c.callee_day, w.day),
            callees_this_week: numbers(&c.callee_week, w.week),
        }
    }

    /// The counts of the windows current at `w` (ended windows are left out).
    pub fn snapshot(&self, w: &Windows) -> CountersSnapshot {
        let mut c = self.lock();
        c.roll(w);
        c.snapshot()
    }

    /// Take the counts out, leaving the counters empty (to write them back elsewhere).
    pub fn take(&self, w: &Windows) -> CountersSnapshot {
        let mut c = self.lock();
        c.roll(w);
        let s = c.snapshot();
        // What is taken goes to the cluster store: it is part of what the store has now.
        let seen = (c.seen_hour.count + s.hour.1, c.seen_day.count + s.day.1);
        *c = Counters::default();
        c.roll(w);
        (c.seen_hour.count, c.seen_day.count) = seen;
        s
    }

    /// Record the account's hour and day counts in the cluster store.
    pub fn saw(&self, w: &Windows, hour: u64, day: u64) {
        let mut c = self.lock();
        c.roll(w);
        (c.seen_hour.count, c.seen_day.count) = (hour, day);
    }

    /// The hour and day counts last seen in the cluster store (zero in a new window).
    pub fn seen(&self, w: &Windows) -> (u64, u64) {
        let mut c = self.lock();
        c.roll(w);
        (c.seen_hour.count, c.seen_day.count)
    }

    /// Add counts of a snapshot whose windows are still current at `w`; the rest is stale
    /// and ignored. Returns the number of calls added.
    pub fn merge(&self, s: &CountersSnapshot, w: &Windows) -> u64 {
        let mut guard = self.lock();
        let c = &mut *guard;
        c.roll(w);
        let mut added = 0;
        if s.hour.0 == w.hour {
            c.hour.count = c.hour.count.saturating_add(s.hour.1);
        }
        if s.day.0 == w.day {
            c.day.count = c.day.count.saturating_add(s.day.1);
            added = s.day.1;
        }
        if s.hour.0 == w.hour {
            c.seen_hour.count = c.seen_hour.count.max(s.seen.0);
        }
        if s.day.0 == w.day {
            c.seen_day.count = c.seen_day.count.max(s.seen.1);
        }
        for (t, (window, numbers), now) in [
            (&mut c.caller_day, &s.caller_day, w.day),
            (&mut c.callee_day, &s.callee_day, w.day),
            (&mut c.callee_week, &s.callee_week, w.week),
        ] {
            if *window == now {
                for &(n, k) in numbers {
                    let e = t.counts.entry(n).or_insert(0);
                    *e = e.saturating_add(k);
                }
            }
        }
        added
    }
}
