//! The behaviour rules through the policy, from config text to decisions, with injected time.
use super::*;
use crate::config::Config;
use crate::screen::dnc::Dnc;
use crate::screen::policy::Screener;
use crate::screen::{Call, Decision, Rule, Screen, Verdict};
use arc_swap::ArcSwap;
use std::path::Path;
use std::time::Duration;

const BASE: &str = r#"
[server]
record_route = true
[screening]
default_country = "US"
[[account]]
id = "acme"
sources = ["192.0.2.0/24"]
caller_ids = ["+12125550100", "+12125550101"]
"#;

fn screener(extra: &str) -> Screener {
    let cfg = Config::parse(Path::new("t.toml"), &format!("{BASE}{extra}")).unwrap_or_else(|e| panic!("{e}"));
    Screener::new(cfg.screening.unwrap_or_else(|| panic!("screening")), Arc::new(ArcSwap::from_pointee(Dnc::default())))
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn invite(call_id: &str, from: &str, to: u64) -> Call<'static> {
    Call {
        source: Some("192.0.2.10".parse().unwrap_or_else(|_| panic!())),
        request_uri: format!("sip:+{to}@carrier.example;user=phone").into(),
        from: format!("<sip:{from}@pbx.example>;tag=ft").into(),
        to: format!("<sip:+{to}@carrier.example>").into(),
        call_id: call_id.to_string().into(),
        key: Some(ev(call_id)),
        ..Call::default()
    }
}

fn code(d: &Decision) -> Option<u16> {
    match &*d.verdict {
        Verdict::Reject { code, .. } => Some(*code),
        Verdict::Forward { .. } => None,
    }
}

/// The key the proxy would give the call (here any stable hash of its Call-ID).
fn ev(call_id: &str) -> CallKey {
    use std::hash::BuildHasher;
    std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(call_id)
}

#[test]
fn max_concurrent_refuses_the_call_over_it_and_a_bye_frees_the_slot() {
    let s = screener("[screening.behaviour]\nmax_concurrent = 2\n");
    assert!(s.tracks_calls());
    let a = s.screen(&invite("c1", "+12125550100", 13125550001), at(0));
    let b = s.screen(&invite("c2", "+12125550100", 13125550020), at(0));
    assert_eq!((code(&a), code(&b)), (None, None));
    assert!(a.tracked.is_some());
    let c = s.screen(&invite("c3", "+12125550101", 13125550040), at(1));
    assert_eq!((code(&c), c.rule), (Some(403), Some(Rule::Concurrent)));
    assert_eq!(c.counters.last().map(|r| (r.name, r.value, r.limit)), Some(("concurrent", 2, 2)));
    s.call_event(CallEvent::Final { call: ev("c1"), code: 200 }, at(2));
    s.call_event(CallEvent::Bye { call: ev("c1") }, at(12));
    let d = s.screen(&invite("c4", "+12125550101", 13125550060), at(13));
    assert_eq!(code(&d), None);
    let f = s.account_snapshot("acme", at(14)).and_then(|a| a.behaviour).unwrap_or_else(|| panic!("figures"));
    assert_eq!((f.attempts, f.answered, f.ended, f.concurrent), (3, 1, 1, 2));
    assert_eq!(f.acd_seconds, Some(10.0));
    // A call not forwarded after all (no route) gives its slot back.
    s.release(&d);
    assert_eq!(s.account_snapshot("acme", at(15)).and_then(|a| a.behaviour).map(|f| f.concurrent), Some(1));
}

#[test]
fn sequential_callees_are_refused_past_the_limit() {
    let s = screener("[screening.behaviour]\nmax_sequential = 3\n");
    let codes: Vec<Option<u16>> =
        (0..5).map(|i| code(&s.screen(&invite(&format!("s{i}"), "+12125550100", 13125550000 + i), at(i)))).collect();
    assert_eq!(codes, [None, None, None, Some(403), Some(403)]);
    let d = s.screen(&invite("s9", "+12125550100", 13125559999), at(9));
    assert_eq!(code(&d), None);
}

#[test]
fn a_low_asr_flags_or_refuses_by_action() {
    let rules = "min_attempts = 3\nmin_asr = 0.5\n";
    for (action, refused) in [("flag", false), ("suspend_caller_id", true)] {
        let s = screener(&format!("[screening.behaviour]\n{rules}action = \"{action}\"\n"));
        for i in 0..3u64 {
            let id = format!("a{i}");
            assert_eq!(code(&s.screen(&invite(&id, "+12125550100", 13125550000 + 10 * i), at(i))), None);
            s.call_event(CallEvent::Final { call: ev(&id), code: 486 }, at(i));
        }
        let d = s.screen(&invite("a9", "+12125550100", 13125551000), at(10));
        assert_eq!(d.rule, Some(Rule::Behaviour), "{action}");
        assert_eq!(code(&d).is_some(), refused, "{action}");
        assert_eq!(d.would_reject, !refused);
        assert_eq!(d.counters.last().map(|r| (r.name, r.value, r.limit)), Some(("caller_id_asr_permille", 0, 500)));
        // suspend_caller_id judges caller IDs only: the account's other one passes. (A flag
        // judges the account's figures too, which flag the other caller ID's call.)
        let other = s.screen(&invite("b1", "+12125550101", 13125552000), at(11));
        assert_eq!(other.rule, (!refused).then_some(Rule::Behaviour), "{action}");
        assert_eq!(code(&other), None);
    }
}

#[test]
fn report_mode_forwards_and_still_counts() {
    let cfg = format!("{BASE}mode = \"report\"\n[screening.behaviour]\nmax_concurrent = 1\n");
    let cfg = Config::parse(Path::new("t.toml"), &cfg).unwrap_or_else(|e| panic!("{e}"));
    let s = Screener::new(cfg.screening.unwrap_or_else(|| panic!()), Arc::new(ArcSwap::from_pointee(Dnc::default())));
    assert_eq!(code(&s.screen(&invite("r1", "+12125550100", 13125550001), at(0))), None);
    let d = s.screen(&invite("r2", "+12125550100", 13125550050), at(0));
    assert_eq!((code(&d), d.rule, d.would_reject), (None, Some(Rule::Concurrent), true));
    let f = s.account_snapshot("acme", at(1)).and_then(|a| a.behaviour).unwrap_or_else(|| panic!());
    assert_eq!((f.attempts, f.concurrent), (2, 2));
}

#[test]
fn per_account_overrides_and_config_errors() {
    let extra = "behaviour = { max_concurrent = 1, window_minutes = 60 }\n[screening.behaviour]\nmax_concurrent = 5\n";
    let s = screener(extra);
    let f = s.account_snapshot("acme", at(0)).and_then(|a| a.behaviour).unwrap_or_else(|| panic!());
    assert_eq!(f.window_minutes, 60);
    assert_eq!(code(&s.screen(&invite("o1", "+12125550100", 13125550001), at(0))), None);
    assert_eq!(code(&s.screen(&invite("o2", "+12125550100", 13125550100), at(0))), Some(403));

    let errs = |text: &str| match Config::parse(Path::new("t.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|d| format!("{}:{}: {}", d.file.display(), d.line, d.msg)).collect(),
    };
    let no_rr = BASE.replace("record_route = true", "record_route = false");
    let e = errs(&format!("{no_rr}[screening.behaviour]\nmin_asr = 0.2\nmax_concurrent = 3\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:12: screening.behaviour.max_concurrent needs the BYE"), "{e:?}");
    let e = errs(&format!("{no_rr}behaviour = {{ min_acd_seconds = 10 }}\n"));
    assert!(e.len() == 1 && e[0].contains("account `acme` behaviour.min_acd_seconds needs the BYE"), "{e:?}");
    let e = errs(&format!(
        "{BASE}[screening.behaviour]\nmin_asr = 1.5\naction = \"ban\"\nwindow_minutes = 0\nmax_sequential = -1\n"
    ));
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(e[0].starts_with("t.toml:11: screening.behaviour.min_asr = 1.5: must be between 0 and 1"), "{e:?}");
    assert!(e[1].contains("action = \"ban\""), "{e:?}");
    let e = errs(&format!("{BASE}behaviour = {{ max_tracked_calls = 5 }}\n"));
    assert!(e.len() == 1 && e[0].contains("set it in [screening.behaviour]"), "{e:?}");
    let e = errs(&format!("{BASE}[screening.behaviour]\nmax_concurent = 5\n"));
    assert!(e.len() == 1 && e[0].contains("max_concurent"), "{e:?}");
}

#[test]
fn a_reload_keeps_live_calls_and_figures() {
    let s = screener("[screening.behaviour]\nmax_concurrent = 1\n");
    assert_eq!(code(&s.screen(&invite("k1", "+12125550100", 13125550001), at(0))), None);
    let cfg = Config::parse(
        Path::new("t.toml"),
        &format!("{BASE}[screening.behaviour]\nmax_concurrent = 1\nmin_asr = 0.1\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    s.reload(cfg.screening.unwrap_or_else(|| panic!()), at(1));
    assert_eq!(code(&s.screen(&invite("k2", "+12125550100", 13125550100), at(2))), Some(403));
    s.call_event(CallEvent::Final { call: ev("k1"), code: 487 }, at(3));
    assert_eq!(code(&s.screen(&invite("k3", "+12125550100", 13125550200), at(4))), None);
}

/// Three calls from +12125550100, each answered 486, then one more: ASR 0 below 0.5.
fn trip(s: &Screener) -> Decision {
    for i in 0..3u64 {
        let id = format!("t{i}");
        assert_eq!(code(&s.screen(&invite(&id, "+12125550100", 13125550000 + 10 * i), at(i))), None);
        s.call_event(CallEvent::Final { call: ev(&id), code: 486 }, at(i));
    }
    s.screen(&invite("t9", "+12125550100", 13125551000), at(10))
}

#[test]
fn suspend_caller_id_suspends_from_the_call_that_trips() {
    let s = screener(
        "[screening.behaviour]\nmin_attempts = 3\nmin_asr = 0.5\naction = \"suspend_caller_id\"\nsuspend_minutes = 2\n",
    );
    let d = trip(&s);
    assert_eq!((code(&d), d.rule), (Some(403), Some(Rule::Behaviour)));
    assert_eq!(
        d.detail.as_deref(),
        Some("+12125550100 suspended until 2023-11-14T22:15:30Z: caller ID asr 0.000 below 0.5 over 3 attempts")
    );
    let listed = s.suspensions().list(at(10));
    assert_eq!(listed.len(), 1);
    let x = &listed[0];
    assert_eq!((x.id.as_str(), x.account.as_str(), x.source.as_str()), ("+12125550100", "acme", "behaviour"));
    assert_eq!(x.until.duration_since(x.since).ok(), Some(Duration::from_secs(120)));
    // The next call of that caller ID is refused as suspended; the account's other passes.
    let d = s.screen(&invite("t10", "+12125550100", 13125552000), at(11));
    assert_eq!((code(&d), d.rule), (Some(403), Some(Rule::Suspended)));
    let d = s.screen(&invite("t11", "+12125550101", 13125553000), at(11));
    assert_eq!((code(&d), d.rule), (None, None));
    // The refused calls are no attempts; the suspension ends after suspend_minutes.
    let f = s.account_snapshot("acme", at(12)).and_then(|a| a.behaviour).unwrap_or_else(|| panic!());
    assert_eq!(f.attempts, 4);
    assert!(s.suspensions().check("acme", Some(12125550100), at(129)).is_some());
    assert!(s.suspensions().check("acme", Some(12125550100), at(130)).is_none());
}

#[test]
fn suspend_account_bars_every_caller_id() {
    let s = screener("[screening.behaviour]\nmin_attempts = 3\nmin_asr = 0.5\naction = \"suspend_account\"\n");
    let d = trip(&s);
    assert_eq!((code(&d), d.rule), (Some(403), Some(Rule::Behaviour)));
    assert_eq!(d.counters.last().map(|r| (r.name, r.value, r.limit)), Some(("account_asr_permille", 0, 500)));
    let d = s.screen(&invite("u1", "+12125550101", 13125553000), at(11));
    assert_eq!((code(&d), d.rule), (Some(403), Some(Rule::Suspended)));
    let x = s.suspensions().list(at(11));
    assert_eq!((x.len(), x[0].id.as_str()), (1, "acme"));
    assert_eq!(x[0].until.duration_since(x[0].since).ok(), Some(Duration::from_secs(1440 * 60)), "the default");
}

#[test]
fn report_mode_only_logs_a_would_be_suspension() {
    let cfg = format!(
        "{BASE}mode = \"report\"\n[screening.behaviour]\nmin_attempts = 3\nmin_asr = 0.5\naction = \"suspend_caller_id\"\n"
    );
    let cfg = Config::parse(Path::new("t.toml"), &cfg).unwrap_or_else(|e| panic!("{e}"));
    let s = Screener::new(cfg.screening.unwrap_or_else(|| panic!()), Arc::new(ArcSwap::from_pointee(Dnc::default())));
    let d = trip(&s);
    assert_eq!((code(&d), d.rule, d.would_reject), (None, Some(Rule::Behaviour), true));
    assert!(d.detail.as_deref().is_some_and(|t| t.starts_with("+12125550100 suspended until")), "{:?}", d.detail);
    assert!(s.suspensions().list(at(10)).is_empty(), "not enforced");
    let d = s.screen(&invite("t10", "+12125550100", 13125552000), at(11));
    assert_eq!((code(&d), d.rule, d.would_reject), (None, Some(Rule::Behaviour), true));
}
