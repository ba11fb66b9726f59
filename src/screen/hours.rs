//! Calling hours in the callee's local time (TCPA: 08:00-21:00). The callee's zone comes from
//! the longest configured number prefix, else the default zone.
use super::prefix::PrefixMap;
use chrono::{DateTime, Duration as ChronoDuration, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::time::SystemTime;

#[derive(Debug, Clone)]
pub struct Hours {
    pub start: NaiveTime,
    /// End of the window (exclusive); before `start` for a window spanning midnight.
    pub end: NaiveTime,
    pub default_tz: Tz,
    pub zones: PrefixMap<Tz>,
}

impl Hours {
    pub fn zone_of(&self, callee: u64) -> Tz {
        self.zones.longest(callee).copied().unwrap_or(self.default_tz)
    }

    fn inside(&self, t: NaiveTime) -> bool {
        if self.start < self.end { self.start <= t && t < self.end } else { t >= self.start || t < self.end }
    }

    /// `Ok` inside the window; else `Err(seconds until it next opens)`, at least 1.
    pub fn check(&self, callee: u64, now: SystemTime) -> Result<(), u32> {
        let tz = self.zone_of(callee);
        let utc: DateTime<Utc> = now.into();
        let local = utc.with_timezone(&tz).naive_local();
        if self.inside(local.time()) {
            return Ok(());
        }
        let date = if local.time() < self.start { local.date() } else { local.date() + ChronoDuration::days(1) };
        let opens = instant_of(tz, date.and_time(self.start));
        let wait = (opens - utc).num_milliseconds();
        // Round up so that retrying after Retry-After seconds lands inside the window.
        let secs = (wait + 999) / 1000;
        Err(u32::try_from(secs.max(1)).unwrap_or(u32::MAX))
    }
}

/// The instant of a local wall time: the earlier one when DST repeats it, the end of the gap
/// when DST skips it.
fn instant_of(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    let mut t = wall;
    // Gaps are at most a few hours; step until the wall time exists.
    for _ in 0..24 * 4 {
        if let Some(i) = tz.from_local_datetime(&t).earliest() {
            return i.with_timezone(&Utc);
        }
        t += ChronoDuration::minutes(15);
    }
    Utc.from_utc_datetime(&wall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn tcpa() -> Hours {
        let mut zones = PrefixMap::default();
        zones.insert(1310, chrono_tz::America::Los_Angeles);
        zones.insert(1212, chrono_tz::America::New_York);
        Hours {
            start: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(21, 0, 0).unwrap(),
            default_tz: chrono_tz::America::Chicago,
            zones,
        }
    }

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> SystemTime {
        let naive = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, s).unwrap();
        tz.from_local_datetime(&naive).earliest().unwrap().into()
    }

    const NYC: u64 = 12125550100;
    const LAX: u64 = 13105550100;
    const CHI: u64 = 13125550100;
    const NY: Tz = chrono_tz::America::New_York;

    #[test]
    fn window_edges_in_callee_time() {
        let h = tcpa();
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 1, 7, 59, 59)), Err(1));
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 1, 8, 0, 0)), Ok(()));
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 1, 20, 59, 59)), Ok(()));
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 1, 21, 0, 0)), Err(11 * 3600));
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 1, 23, 59, 59)), Err(8 * 3600 + 1));
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 2, 0, 0, 0)), Err(8 * 3600));
        // 10:00 in New York is 07:00 in Los Angeles: too early there.
        assert_eq!(h.check(LAX, at(NY, 2026, 6, 1, 10, 0, 0)), Err(3600));
        // Unlisted prefixes use the default zone (Chicago, one hour behind New York).
        assert_eq!(h.check(CHI, at(NY, 2026, 6, 1, 8, 30, 0)), Err(1800));
    }

    #[test]
    fn retry_after_spans_dst_changes() {
        let h = tcpa();
        // Night before spring forward: 21:00 EST -> 08:00 EDT is 10 hours.
        assert_eq!(h.check(NYC, at(NY, 2026, 3, 7, 21, 0, 0)), Err(10 * 3600));
        // Night before fall back: 21:00 EDT -> 08:00 EST is 12 hours.
        assert_eq!(h.check(NYC, at(NY, 2026, 10, 31, 21, 0, 0)), Err(12 * 3600));
    }

    #[test]
    fn overnight_window_and_gap_start() {
        let mut h = tcpa();
        h.start = NaiveTime::from_hms_opt(22, 0, 0).unwrap();
        h.end = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 1, 23, 0, 0)), Ok(()));
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 1, 5, 59, 59)), Ok(()));
        assert_eq!(h.check(NYC, at(NY, 2026, 6, 1, 12, 0, 0)), Err(10 * 3600));
        // A window opening at 02:30 on the spring-forward day opens at 03:00 EDT.
        h.start = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        h.end = NaiveTime::from_hms_opt(4, 0, 0).unwrap();
        assert_eq!(h.check(NYC, at(NY, 2026, 3, 8, 1, 0, 0)), Err(3600));
    }
}
