use super::*;
use crate::screen::CounterReading;
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
        self.counters.check_and_count(&self.limits, Some((&self.pacing, now)), &w, caller, callee, max, &mut r)
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
    assert!(acct.counters.check_and_count(&limits, Some((&acct.pacing, now)), &w, A, 13105550001, 100, &mut r));
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
