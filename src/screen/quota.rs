//! Quotas per account. Hour, day and week caps are exact counters over calendar windows in the
//! configured zone (`quota_tz`): the count resets at the local boundary, so a 1000/day cap
//! admits at most 1000 calls in any calendar day (a token bucket would admit its burst plus a
//! day of refill). Per-second and per-minute pacing use governor's GCRA, which allows bursts.
//!
//! All counters of an account sit behind one mutex, taken once per call; governor's state is
//! lock-free. Maps keyed by callee or caller ID are cleared when their window ends and capped
//! at `max_tracked` entries: a call that would need a new entry in a full map is refused as a
//! quota breach, so the caps stay exact instead of forgetting numbers.
use super::CounterReading;
use super::hash::NumberMap;
use chrono::{DateTime, Datelike, Offset, Utc};
use chrono_tz::Tz;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Limits of one account (defaults from `[screening.quota]`, overridden per account).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub per_second: Option<NonZeroU32>,
    /// Burst allowed by the per-second pacing (default: `per_second`).
    pub burst: Option<NonZeroU32>,
    pub per_minute: Option<NonZeroU32>,
    pub per_hour: Option<u64>,
    pub per_day: Option<u64>,
    pub per_caller_id_per_day: Option<u64>,
    pub per_callee_per_day: Option<u64>,
    pub per_callee_per_week: Option<u64>,
}

impl QuotaLimits {
    /// `self` with every limit `over` sets replaced.
    pub fn overridden_by(self, over: &QuotaLimits) -> QuotaLimits {
        QuotaLimits {
            per_second: over.per_second.or(self.per_second),
            burst: over.burst.or(self.burst),
            per_minute: over.per_minute.or(self.per_minute),
            per_hour: over.per_hour.or(self.per_hour),
            per_day: over.per_day.or(self.per_day),
            per_caller_id_per_day: over.per_caller_id_per_day.or(self.per_caller_id_per_day),
            per_callee_per_day: over.per_callee_per_day.or(self.per_callee_per_day),
            per_callee_per_week: over.per_callee_per_week.or(self.per_callee_per_week),
        }
    }

    fn pacing_key(&self) -> (Option<NonZeroU32>, Option<NonZeroU32>, Option<NonZeroU32>) {
        (self.per_second, self.burst, self.per_minute)
    }
}

/// The calendar windows an instant falls in, in the quota zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// UTC second at which the local hour started (unique even when DST repeats an hour).
    pub hour: i64,
    /// Local date as days since 0001-01-01.
    pub day: i64,
    /// Day number of the Monday starting the local ISO week.
    pub week: i64,
}

impl Windows {
    pub fn at(tz: Tz, now: SystemTime) -> Windows {
        let utc: DateTime<Utc> = now.into();
        let local = utc.with_timezone(&tz);
        let ts = utc.timestamp();
        let offset = i64::from(local.offset().fix().local_minus_utc());
        let day = i64::from(local.date_naive().num_days_from_ce());
        Windows {
            hour: ts - (ts + offset).rem_euclid(3600),
            day,
            week: day - i64::from(local.weekday().num_days_from_monday()),
        }
    }
}

/// Governor clock that returns the injected time of the call being admitted: governor has
/// no check-at-time API, and time must come in as an argument. Each account's pacing has its
/// own clock, set just before its limiters are asked and read by them, all under the
/// account's counter lock, so calls screened at once on other threads never see each
/// other's time (no thread-local or global state).
#[derive(Debug, Clone, Default)]
pub struct CallClock(Arc<AtomicU64>);

impl governor::clock::Clock for CallClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, CallClock, NoOpMiddleware<Duration>>;

/// Per-second and per-minute pacing of one account.
#[derive(Debug)]
pub struct Pacing {
    clock: CallClock,
    per_second: Option<Limiter>,
    per_minute: Option<Limiter>,
    key: (Option<NonZeroU32>, Option<NonZeroU32>, Option<NonZeroU32>),
}

impl Pacing {
    pub fn new(limits: &QuotaLimits) -> Pacing {
        let clock = CallClock::default();
        let per_second = limits.per_second.map(|n| {
            let q = Quota::per_second(n).allow_burst(limits.burst.unwrap_or(n));
            Limiter::direct_with_clock(q, clock.clone())
        });
        let per_minute = limits.per_minute.map(|n| Limiter::direct_with_clock(Quota::per_minute(n), clock.clone()));
        Pacing { clock, per_second, per_minute, key: limits.pacing_key() }
    }

    /// Whether this pacing state can be kept for new limits (on reload).
    pub fn fits(&self, limits: &QuotaLimits) -> bool {
        self.key == limits.pacing_key()
    }

    /// Take a cell from each limiter; the name of the one that refused. A per-second cell
    /// taken before the per-minute limiter refuses is not returned (governor cannot undo),
    /// which only makes pacing slightly stricter.
    fn admit(&self, now: SystemTime) -> Result<(), &'static str> {
        let nanos = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        self.clock.0.store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(l) = &self.per_second {
            l.check().map_err(|_| "per_second")?;
        }
        if let Some(l) = &self.per_minute {
            l.check().map_err(|_| "per_minute")?;
        }
        Ok(())
    }
}

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
}

impl Default for Counters {
    fn default() -> Self {
        let tally = || Tally { window: i64::MIN, count: 0 };
        let numbers = || NumberTally { window: i64::MIN, counts: NumberMap::default() };
        Counters { hour: tally(), day: tally(), caller_day: numbers(), callee_day: numbers(), callee_week: numbers() }
    }
}

/// Counter values of an account at some instant (zero for windows that have ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Usage {
    pub calls_this_hour: u64,
    pub calls_today: u64,
    pub caller_ids_today: u64,
    pub callees_today: u64,
    pub callees_this_week: u64,
}

/// Counters of one account: window tallies behind one lock plus lock-free pacing.
#[derive(Debug, Default)]
pub struct AccountCounters {
    counters: Mutex<Counters>,
}

impl AccountCounters {
    /// Check every limit for a call from `caller` to `callee`; when all pass, count it.
    /// `readings` receives each configured cap with its value (including this call if it
    /// passed). Returns whether the call is within quota.
    #[allow(clippy::too_many_arguments)]
    pub fn check_and_count(
        &self,
        limits: &QuotaLimits,
        pacing: &Pacing,
        w: &Windows,
        caller: u64,
        callee: u64,
        now: SystemTime,
        max_tracked: usize,
        readings: &mut Vec<CounterReading>,
    ) -> bool {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.hour.roll(w.hour);
        c.day.roll(w.day);
        c.caller_day.roll(w.day);
        c.callee_day.roll(w.day);
        c.callee_week.roll(w.week);
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
        if ok && let Err(name) = pacing.admit(now) {
            ok = false;
            let limit = match name {
                "per_second" => limits.burst.or(limits.per_second),
                _ => limits.per_minute,
            };
            let limit = limit.map_or(0, |n| u64::from(n.get()));
            readings.push(CounterReading { name, value: limit, limit });
        }
        let step = u64::from(ok);
        for (name, value, limit) in caps {
            if let Some(limit) = limit {
                readings.push(CounterReading { name, value: value + step, limit });
            }
        }
        if ok {
            c.hour.count += 1;
            c.day.count += 1;
            if limits.per_caller_id_per_day.is_some() {
                c.caller_day.add(caller);
            }
            if limits.per_callee_per_day.is_some() {
                c.callee_day.add(callee);
            }
            if limits.per_callee_per_week.is_some() {
                c.callee_week.add(callee);
            }
        }
        ok
    }

    /// Take back a call counted by `check_and_count` at windows `w` that was not forwarded
    /// after all. Windows that have ended since are left alone (their counts are gone).
    pub fn uncount(&self, limits: &QuotaLimits, w: &Windows, caller: u64, callee: u64) {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
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
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    const NY: Tz = chrono_tz::America::New_York;

    /// Instant of a local wall time in New York (the earlier one when ambiguous).
    fn ny(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> SystemTime {
        let naive = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, s).unwrap();
        NY.from_local_datetime(&naive).earliest().unwrap().into()
    }

    struct Account {
        limits: QuotaLimits,
        pacing: Pacing,
        counters: AccountCounters,
    }

    impl Account {
        fn new(limits: QuotaLimits) -> Account {
            Account { pacing: Pacing::new(&limits), limits, counters: AccountCounters::default() }
        }
        fn call(&self, caller: u64, callee: u64, now: SystemTime) -> bool {
            self.call_tracked(caller, callee, now, 1_000_000)
        }
        fn call_tracked(&self, caller: u64, callee: u64, now: SystemTime, max: usize) -> bool {
            let w = Windows::at(NY, now);
            let mut r = Vec::new();
            self.counters.check_and_count(&self.limits, &self.pacing, &w, caller, callee, now, max, &mut r)
        }
    }

    const A: u64 = 12125550100;

    #[test]
    fn day_resets_exactly_at_local_midnight() {
        let acct = Account::new(QuotaLimits { per_day: Some(2), ..Default::default() });
        assert!(acct.call(A, 13105550001, ny(2026, 6, 1, 23, 59, 57)));
        assert!(acct.call(A, 13105550002, ny(2026, 6, 1, 23, 59, 58)));
        assert!(!acct.call(A, 13105550003, ny(2026, 6, 1, 23, 59, 59)));
        assert!(acct.call(A, 13105550004, ny(2026, 6, 2, 0, 0, 0)));
        assert!(acct.call(A, 13105550005, ny(2026, 6, 2, 0, 0, 1)));
        assert!(!acct.call(A, 13105550006, ny(2026, 6, 2, 0, 0, 2)));
        // The boundary is New York midnight, not UTC midnight (04:00Z in summer).
        let utc_midnight: SystemTime = Utc.with_ymd_and_hms(2026, 6, 3, 0, 0, 0).unwrap().into();
        assert!(!acct.call(A, 13105550007, utc_midnight));
    }

    #[test]
    fn thousand_per_day_admits_exactly_a_thousand_per_calendar_day() {
        let acct = Account::new(QuotaLimits { per_day: Some(1000), ..Default::default() });
        let start = ny(2026, 6, 1, 0, 0, 0);
        // Attempts every 30 s over two days: 2880 per day, far above the cap.
        let mut admitted = [0u32; 2];
        for i in 0..(2 * 2880u64) {
            let now = start + Duration::from_secs(30 * i);
            if acct.call(A, 13105550000 + i, now) {
                admitted[(i / 2880) as usize] += 1;
            }
        }
        assert_eq!(admitted, [1000, 1000]);
        // A burst at 23:59 and another at 00:00 are two calendar days, but within one day
        // the cap never moves: 1000 early calls exhaust it until midnight.
        let acct = Account::new(QuotaLimits { per_day: Some(1000), ..Default::default() });
        let morning = ny(2026, 6, 3, 8, 0, 0);
        assert_eq!((0..1500).filter(|i| acct.call(A, 13105550000 + i, morning)).count(), 1000);
        assert!(!acct.call(A, 13105560000, ny(2026, 6, 3, 23, 59, 59)));
        assert!(acct.call(A, 13105560000, ny(2026, 6, 4, 0, 0, 0)));
    }

    #[test]
    fn dst_days_are_whole_calendar_days_and_repeated_hours_are_separate() {
        // 2026-11-01: New York falls back at 02:00 EDT -> 01:00 EST; the day has 25 hours.
        let w_morning = Windows::at(NY, ny(2026, 11, 1, 0, 30, 0));
        let first_0130 = ny(2026, 11, 1, 1, 30, 0);
        let second_0130 = first_0130 + Duration::from_secs(3600);
        let w1 = Windows::at(NY, first_0130);
        let w2 = Windows::at(NY, second_0130);
        assert_eq!(w1.day, w2.day);
        assert_eq!(w_morning.day, w1.day);
        assert_ne!(w1.hour, w2.hour, "01:30 EDT and 01:30 EST are different hours");
        assert_eq!(Windows::at(NY, ny(2026, 11, 1, 23, 59, 59)).day, w1.day);
        assert_ne!(Windows::at(NY, ny(2026, 11, 2, 0, 0, 0)).day, w1.day);

        let acct = Account::new(QuotaLimits { per_hour: Some(1), per_day: Some(3), ..Default::default() });
        assert!(acct.call(A, 13105550001, first_0130));
        assert!(!acct.call(A, 13105550002, first_0130 + Duration::from_secs(1)));
        assert!(acct.call(A, 13105550003, second_0130), "the repeated hour is a new window");
        assert!(acct.call(A, 13105550004, ny(2026, 11, 1, 23, 59, 59)));
        assert!(!acct.call(A, 13105550005, ny(2026, 11, 1, 23, 59, 59) + Duration::from_secs(0)));
        assert!(acct.call(A, 13105550006, ny(2026, 11, 2, 0, 0, 0)));

        // 2026-03-08: spring forward, 02:00 EST -> 03:00 EDT; the day has 23 hours.
        let before = ny(2026, 3, 8, 1, 59, 59);
        let after = before + Duration::from_secs(1);
        let (wb, wa) = (Windows::at(NY, before), Windows::at(NY, after));
        assert_eq!(wb.day, wa.day);
        assert_eq!(wa.hour - wb.hour, 3600, "03:00 EDT follows 01:00 EST");
        assert_eq!(Windows::at(NY, ny(2026, 3, 8, 23, 59, 59)).day, wa.day);
        assert_eq!(Windows::at(NY, ny(2026, 3, 9, 0, 0, 0)).day, wa.day + 1);
    }

    #[test]
    fn hours_reset_on_local_hour_boundaries() {
        // Kolkata is UTC+05:30: its hours start at :30 UTC.
        let tz: Tz = chrono_tz::Asia::Kolkata;
        let t = |h, m, s| -> SystemTime { Utc.with_ymd_and_hms(2026, 6, 1, h, m, s).unwrap().into() };
        assert_eq!(Windows::at(tz, t(4, 29, 59)).hour + 3600, Windows::at(tz, t(4, 30, 0)).hour);
        assert_eq!(Windows::at(tz, t(4, 30, 0)).hour, Windows::at(tz, t(5, 29, 59)).hour);
    }

    #[test]
    fn per_caller_id_and_per_callee_caps() {
        let acct = Account::new(QuotaLimits {
            per_caller_id_per_day: Some(2),
            per_callee_per_day: Some(1),
            per_callee_per_week: Some(2),
            ..Default::default()
        });
        // Monday 2026-06-01.
        let mon = ny(2026, 6, 1, 10, 0, 0);
        let callee = 13105550001;
        assert!(acct.call(A, callee, mon));
        assert!(!acct.call(A + 1, callee, mon), "same callee twice in a day");
        assert!(acct.call(A, 13105550002, mon));
        assert!(!acct.call(A, 13105550003, mon), "caller ID used twice already");
        assert!(acct.call(A + 1, 13105550003, mon));
        let tue = ny(2026, 6, 2, 10, 0, 0);
        assert!(acct.call(A, callee, tue), "new day for the callee");
        let wed = ny(2026, 6, 3, 10, 0, 0);
        assert!(!acct.call(A + 2, callee, wed), "two calls this week already");
        let next_mon = ny(2026, 6, 8, 0, 0, 0);
        assert!(acct.call(A + 2, callee, next_mon), "weeks start on Monday");
        let w = Windows::at(NY, next_mon);
        assert_eq!(acct.counters.usage(&w).callees_this_week, 1);
    }

    #[test]
    fn rejected_calls_do_not_consume_quota_and_readings_show_values() {
        let limits = QuotaLimits { per_day: Some(5), per_callee_per_day: Some(1), ..Default::default() };
        let acct = Account::new(limits);
        let now = ny(2026, 6, 1, 10, 0, 0);
        let w = Windows::at(NY, now);
        let mut r = Vec::new();
        assert!(acct.counters.check_and_count(&limits, &acct.pacing, &w, A, 13105550001, now, 100, &mut r));
        assert_eq!(
            r,
            vec![
                CounterReading { name: "account_per_day", value: 1, limit: 5 },
                CounterReading { name: "callee_per_day", value: 1, limit: 1 },
            ]
        );
        for _ in 0..10 {
            assert!(!acct.call(A, 13105550001, now));
        }
        assert_eq!(acct.counters.usage(&w).calls_today, 1);
    }

    #[test]
    fn a_call_taken_back_frees_its_place() {
        let limits = QuotaLimits { per_day: Some(1), per_callee_per_day: Some(1), ..Default::default() };
        let acct = Account::new(limits);
        let now = ny(2026, 6, 1, 10, 0, 0);
        let w = Windows::at(NY, now);
        assert!(acct.call(A, 13105550001, now));
        assert!(!acct.call(A, 13105550001, now));
        acct.counters.uncount(&limits, &w, A, 13105550001);
        assert_eq!(acct.counters.usage(&w), Usage::default());
        assert!(acct.call(A, 13105550001, now), "the place is free again");
        // Taking back a call of a window that has ended changes nothing in the new one.
        let tomorrow = ny(2026, 6, 2, 10, 0, 0);
        assert!(acct.call(A, 13105550001, tomorrow));
        acct.counters.uncount(&limits, &w, A, 13105550001);
        assert_eq!(acct.counters.usage(&Windows::at(NY, tomorrow)).calls_today, 1);
    }

    #[test]
    fn full_tracking_maps_refuse_new_numbers() {
        let acct = Account::new(QuotaLimits { per_callee_per_day: Some(3), ..Default::default() });
        let now = ny(2026, 6, 1, 10, 0, 0);
        assert!(acct.call_tracked(A, 13105550001, now, 2));
        assert!(acct.call_tracked(A, 13105550002, now, 2));
        assert!(!acct.call_tracked(A, 13105550003, now, 2), "a third callee does not fit");
        assert!(acct.call_tracked(A, 13105550001, now, 2), "known callees still count");
        assert!(acct.call_tracked(A, 13105550003, ny(2026, 6, 2, 0, 0, 0), 2), "maps clear at the window end");
    }

    #[test]
    fn pacing_uses_the_injected_time() {
        let acct = Account::new(QuotaLimits {
            per_second: NonZeroU32::new(2),
            per_minute: NonZeroU32::new(3),
            ..Default::default()
        });
        let t0 = ny(2026, 6, 1, 10, 0, 0);
        assert!(acct.call(A, 13105550001, t0));
        assert!(acct.call(A, 13105550002, t0));
        assert!(!acct.call(A, 13105550003, t0), "burst of 2 per second");
        assert!(acct.call(A, 13105550004, t0 + Duration::from_secs(1)));
        assert!(!acct.call(A, 13105550005, t0 + Duration::from_secs(2)), "3 per minute");
        assert!(acct.call(A, 13105550006, t0 + Duration::from_secs(21)), "one minute cell every 20 s");
    }
}
