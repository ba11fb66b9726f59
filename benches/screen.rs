//! Cost of screening one call that passes every rule (account by source network, caller ID
//! parse + ownership + spoofing checks, calling hours, DNC placeholder, day/hour caps and
//! per-callee counters, governor pacing), and of queueing its decision-log line.
use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_group, criterion_main};
use sipguard::config::Config;
use sipguard::screen::dnc::Dnc;
use sipguard::screen::policy::Screener;
use sipguard::screen::{Call, Screen};
use sipguard::telemetry::decisions::DecisionLog;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CONFIG: &str = r#"
[screening]
default_country = "US"
quota_tz = "America/New_York"

[screening.quota]
per_second = 1000000000
per_hour = 1000000000
per_day = 1000000000
per_caller_id_per_day = 1000000000
per_callee_per_day = 1000000000
per_callee_per_week = 1000000000

[screening.hours]
start = "00:00"
end = "23:59:59"
default_tz = "America/New_York"
[[screening.hours.zone]]
prefix = "+1310"
tz = "America/Los_Angeles"

[[account]]
id = "acme"
sources = ["192.0.2.0/24"]
caller_ids = ["+12125550100", "+1646555*"]

[[account]]
id = "other"
sources = ["198.51.100.0/24"]
"#;

fn screener() -> Screener {
    let cfg = Config::parse(Path::new("bench.toml"), CONFIG).expect("bench config is valid");
    Screener::new(cfg.screening.expect("has [screening]"), Arc::new(ArcSwap::from_pointee(Dnc::default())))
}

fn calls() -> Vec<Call<'static>> {
    // 10,000 different callees so the per-callee maps see realistic spread.
    (0..10_000u64)
        .map(|i| Call {
            source: Some("192.0.2.10".parse().expect("ip")),
            account_header: None,
            request_uri: format!("sip:+1310555{:04}@carrier.example;user=phone", i).into(),
            from: "\"Sales\" <sip:+16465550123@pbx.example;user=phone>;tag=9fxced76sl".into(),
            to: format!("<sip:+1310555{:04}@carrier.example>", i).into(),
            p_asserted_identity: Some("<sip:+16465550123@pbx.example;user=phone>".into()),
            identity: None,
            call_id: format!("{i}@pbx.example").into(),
            key: None,
            asserted_account: None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let s = screener();
    let calls = calls();
    // Midday in New York, advancing 1 ms per call.
    let start = UNIX_EPOCH + Duration::from_secs(1_780_329_600);
    let mut i = 0usize;
    c.bench_function("screen_passed_call", |b| {
        b.iter(|| {
            i += 1;
            let call = &calls[i % calls.len()];
            let now: SystemTime = start + Duration::from_millis(i as u64);
            let d = s.screen(black_box(call), now);
            debug_assert!(d.verdict.is_forward());
            black_box(d)
        })
    });
    let (log, _handle) = DecisionLog::start_with(Box::new(std::io::sink()), 65_536);
    let d = s.screen(&calls[0], start);
    c.bench_function("decision_log_try_send", |b| b.iter(|| black_box(log.log(start, &calls[0].call_id, &d))));
    println!("decision lines dropped (queue full) during the bench: {}", log.dropped());
}

criterion_group!(benches, bench);
criterion_main!(benches);
