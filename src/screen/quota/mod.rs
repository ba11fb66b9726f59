//! Quotas per account. Hour, day and week caps are exact counters over calendar windows in the
//! configured zone (`quota_tz`): the count resets at the local boundary, so a 1000/day cap
//! admits at most 1000 calls in any calendar day (a token bucket would admit its burst plus a
//! day of refill). Per-second and per-minute pacing use governor's GCRA, which allows bursts.
//!
//! All counters of an account sit behind one mutex, taken once per call; governor's state is
//! lock-free. Maps keyed by callee or caller ID are cleared when their window ends and capped
//! at `max_tracked` entries: a call that would need a new entry in a full map is refused as a
//! quota breach, so the caps stay exact instead of forgetting numbers.
pub mod local;
pub mod shared;

pub use local::{AccountCounters, CountersSnapshot};

use chrono::{DateTime, Datelike, Offset, Utc};
use chrono_tz::Tz;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
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

    /// Whether any hour, day or week counter has a cap (what the cluster store enforces).
    pub fn has_window_caps(&self) -> bool {
        self.per_hour.is_some()
            || self.per_day.is_some()
            || self.per_caller_id_per_day.is_some()
            || self.per_callee_per_day.is_some()
            || self.per_callee_per_week.is_some()
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
    /// UTC second of the local midnight that started the day, at today's offset (off by the
    /// DST shift on the two days a year that have one).
    pub day_start: i64,
}

/// Margin added to a window's end before a shared counter of it expires: the key names its
/// window, so it is never counted into again; the margin only covers clocks of nodes that
/// disagree and the DST shift of `day_start`.
const EXPIRY_MARGIN: i64 = 86_400;

impl Windows {
    /// UTC seconds at which counters of the hour, the day and the week may be dropped.
    pub fn expiry(&self) -> [i64; 3] {
        let week_start = self.day_start - (self.day - self.week) * 86_400;
        [
            self.hour + 3600 + EXPIRY_MARGIN,
            self.day_start + 86_400 + EXPIRY_MARGIN,
            week_start + 7 * 86_400 + EXPIRY_MARGIN,
        ]
    }
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
            day_start: ts - (ts + offset).rem_euclid(86_400),
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

/// Counter values of an account at some instant (zero for windows that have ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Usage {
    pub calls_this_hour: u64,
    pub calls_today: u64,
    pub caller_ids_today: u64,
    pub callees_today: u64,
    pub callees_this_week: u64,
}

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

    /// Take a cell from each limiter; the reading of the one that refused, if any.
    pub fn refusal(&self, limits: &QuotaLimits, now: SystemTime) -> Option<crate::screen::CounterReading> {
        let name = self.admit(now).err()?;
        let limit = match name {
            "per_second" => limits.burst.or(limits.per_second),
            _ => limits.per_minute,
        };
        let limit = limit.map_or(0, |n| u64::from(n.get()));
        Some(crate::screen::CounterReading { name, value: limit, limit })
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

#[cfg(test)]
mod tests;
