//! The policy end to end, from config text to decisions, with injected time.
use super::*;
use crate::config::Config;
use crate::screen::CounterReading;
use chrono::{NaiveDate, TimeZone};
use std::path::PathBuf;
use std::time::Duration;

const NY: Tz = chrono_tz::America::New_York;

fn ny(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> SystemTime {
    let naive = NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_opt(h, mi, s).unwrap();
    NY.from_local_datetime(&naive).earliest().unwrap().into()
}

/// A config directory with owned.csv next to the config file.
fn dir(name: &str, csv: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sipguard-policy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("owned.csv"), csv).unwrap();
    dir
}

const OWNED: &str = "account,number\nacme,+12125550100\nacme,+1646555*\nhdr,+13125550100\n";

const BASE: &str = r#"
[screening]
default_country = "US"
caller_id_numbers = "owned.csv"
account_header = "X-Account"
trusted_sources = ["198.51.100.0/24"]
quota_tz = "America/New_York"

[screening.quota]
per_day = 3

[screening.hours]
start = "08:00"
end = "21:00"
default_tz = "America/New_York"
[[screening.hours.zone]]
prefix = "+1310"
tz = "America/Los_Angeles"

[[account]]
id = "acme"
sources = ["192.0.2.0/24"]
caller_ids = ["+12015550100"]

[[account]]
id = "lax"
sources = ["203.0.113.0/24"]
caller_ids = ["+12015550100"]
mode = "report"
"#;

fn screener(name: &str, extra: &str) -> Screener {
    let dir = dir(name, OWNED);
    let cfg = Config::parse(&dir.join("sipguard.toml"), &format!("{BASE}{extra}")).unwrap_or_else(|e| panic!("{e}"));
    Screener::new(cfg.screening.unwrap(), Arc::new(ArcSwap::from_pointee(Dnc::default())))
}

fn invite(src: &str, from: &str, to: &str) -> Call<'static> {
    Call {
        source: Some(src.parse().unwrap()),
        request_uri: format!("sip:{to}@carrier.example;user=phone").into(),
        from: format!("\"Sales\" <sip:{from}@pbx.example>;tag=a1").into(),
        to: format!("<sip:{to}@carrier.example>").into(),
        call_id: "c1@pbx".into(),
        ..Call::default()
    }
}

fn code(d: &Decision) -> Option<u16> {
    match &*d.verdict {
        Verdict::Reject { code, .. } => Some(*code),
        Verdict::Forward { .. } => None,
    }
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    match &*d.verdict {
        Verdict::Reject { headers, .. } => headers.iter().find(|h| h.name == name).map(|h| h.value.as_str()),
        Verdict::Forward { .. } => None,
    }
}

const NOON: (i32, u32, u32, u32, u32, u32) = (2026, 6, 1, 12, 0, 0);

fn noon() -> SystemTime {
    let (y, mo, d, h, mi, s) = NOON;
    ny(y, mo, d, h, mi, s)
}

#[test]
fn a_good_call_is_forwarded_with_its_facts() {
    let s = screener("good", "");
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+12125550199"), noon());
    assert!(d.verdict.is_forward(), "{d:?}");
    assert_eq!(d.rule, None);
    assert_eq!(d.account.as_deref(), Some("acme"));
    assert_eq!(d.caller, Some(12125550100));
    assert_eq!(d.callee, Some(12125550199));
    assert_eq!(d.counters, vec![CounterReading { name: "account_per_day", value: 1, limit: 3 }]);
    // A national-format caller in a prefix block, and a tel: Request-URI.
    let mut c = invite("192.0.2.10", "6465550123", "+12125550199");
    c.request_uri = "tel:+1-212-555-0199".into();
    assert!(s.screen(&c, noon()).verdict.is_forward());
}

#[test]
fn unknown_accounts_are_rejected_or_forwarded() {
    let s = screener("unknown", "");
    let d = s.screen(&invite("203.0.113.200", "+12015550100", "+12125550199"), noon());
    assert_eq!((d.rule, d.account.as_deref()), (None, Some("lax")));
    let d = s.screen(&invite("100.64.0.1", "+12125550100", "+12125550199"), noon());
    assert_eq!(d.rule, Some(Rule::UnknownAccount));
    assert_eq!(code(&d), Some(403));
    assert_eq!((d.caller, d.callee), (Some(12125550100), Some(12125550199)), "facts for the log");
    assert_eq!(header(&d, "Reason"), Some("SIP;cause=403;text=\"Unknown account\""));
    let s = screener_with_line("unknown-fwd", r#"unknown_account = "forward""#);
    let d = s.screen(&invite("100.64.0.1", "+12125550100", "+12125550199"), noon());
    assert!(d.verdict.is_forward());
    assert_eq!(d.account, None);
}

/// A screener whose [screening] section has one more line.
fn screener_with_line(name: &str, line: &str) -> Screener {
    let dir = dir(name, OWNED);
    let text = BASE.replacen("[screening]\n", &format!("[screening]\n{line}\n"), 1);
    let cfg = Config::parse(&dir.join("sipguard.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    Screener::new(cfg.screening.unwrap(), Arc::new(ArcSwap::from_pointee(Dnc::default())))
}

#[test]
fn header_accounts_only_from_trusted_sources() {
    let s = screener("header", "");
    let mut c = invite("198.51.100.9", "+13125550100", "+12125550199");
    c.account_header = Some("hdr".into());
    let d = s.screen(&c, noon());
    assert!(d.verdict.is_forward(), "{d:?}");
    assert_eq!(d.account.as_deref(), Some("hdr"), "an account known only from owned.csv");
    c.source = Some("100.64.0.1".parse().unwrap());
    assert_eq!(s.screen(&c, noon()).rule, Some(Rule::UnknownAccount));
    assert_eq!(s.account_header().as_deref(), Some("X-Account"));
}

#[test]
fn caller_id_rules() {
    let s = screener("callerid", "");
    let at = noon();
    let d = s.screen(&invite("192.0.2.10", "+13125550100", "+12125550199"), at);
    assert_eq!((d.rule, code(&d)), (Some(Rule::CallerIdUnowned), Some(403)), "hdr's number, not acme's");
    let d = s.screen(&invite("192.0.2.10", "+12124110100", "+12125550199"), at);
    assert_eq!(d.rule, Some(Rule::CallerIdInvalid), "N11 NXX");
    // Unparseable From: the caller_id_invalid response, not a crash.
    let mut c = invite("192.0.2.10", "+12125550100", "+12125550199");
    c.from = "\u{0}<<>>;;;".into();
    let d = s.screen(&c, at);
    assert_eq!((d.rule, code(&d)), (Some(Rule::CallerIdInvalid), Some(403)));
    assert_eq!(d.caller, None);
    let mut c = invite("192.0.2.10", "+12125550100", "+12125550199");
    c.request_uri = "sip:carrier.example".into();
    c.to = "<sip:support@carrier.example>".into();
    let d = s.screen(&c, at);
    assert_eq!((d.rule, code(&d)), (Some(Rule::CalleeInvalid), Some(404)), "no callee number");
    // A 12-digit NANP callee cannot exist: refused, not forwarded, and nothing counted.
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+131255501221"), at);
    assert_eq!((d.rule, code(&d)), (Some(Rule::CalleeInvalid), Some(404)), "{d:?}");
    assert!(d.charge.is_none() && d.counters.is_empty());
    // PAI is the caller ID when present; a different From is a spoofing sign.
    let mut c = invite("192.0.2.10", "+12015550100", "+12125550199");
    c.p_asserted_identity = Some("<sip:+12125550100@pbx.example>".into());
    let d = s.screen(&c, at);
    assert_eq!(d.caller, Some(12125550100));
    assert_eq!(d.rule, Some(Rule::CallerIdSpoofed));
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+12125550100"), at);
    assert_eq!(d.rule, Some(Rule::CallerIdSpoofed), "calling itself");
}

#[test]
fn calling_hours_reject_with_retry_after() {
    let s = screener("hours", "");
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+12125550199"), ny(2026, 6, 1, 21, 0, 0));
    assert_eq!((d.rule, code(&d)), (Some(Rule::Hours), Some(480)));
    assert_eq!(header(&d, "Retry-After"), Some("39600"));
    // 09:00 in New York is 06:00 in Los Angeles.
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+13105550199"), ny(2026, 6, 1, 9, 0, 0));
    assert_eq!(header(&d, "Retry-After"), Some("7200"));
}

#[test]
fn quota_is_exact_and_only_forwarded_calls_count() {
    let s = screener("quota", "");
    let at = noon();
    // Rejected calls consume nothing.
    for _ in 0..5 {
        assert_eq!(
            s.screen(&invite("192.0.2.10", "+13125550100", "+12125550199"), at).rule,
            Some(Rule::CallerIdUnowned)
        );
    }
    for i in 0..3 {
        assert!(s.screen(&invite("192.0.2.10", "+12125550100", &format!("+1212555020{i}")), at).verdict.is_forward());
    }
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+12125550299"), at);
    assert_eq!((d.rule, code(&d)), (Some(Rule::Quota), Some(403)));
    assert_eq!(header(&d, "Reason"), Some("SIP;cause=403;text=\"Call quota exceeded\""));
    assert_eq!(d.counters, vec![CounterReading { name: "account_per_day", value: 3, limit: 3 }]);
    let snap = s.account_snapshot("acme", at).unwrap();
    assert_eq!((snap.usage.calls_today, snap.remaining_today), (3, Some(0)));
    assert!(s.account_snapshot("nobody", at).is_none());
    // Midnight in quota_tz opens a new day (08:00 because of calling hours).
    let next = ny(2026, 6, 2, 8, 0, 0);
    assert!(s.screen(&invite("192.0.2.10", "+12125550100", "+12125550299"), next).verdict.is_forward());
    assert_eq!(s.account_snapshot("acme", next).unwrap().remaining_today, Some(2));
}

#[test]
fn report_mode_forwards_what_enforce_rejects() {
    let s = screener("report", "");
    let at = noon();
    // Account lax is in report mode; acme enforces.
    let enforce = s.screen(&invite("192.0.2.10", "+13125550100", "+12125550199"), at);
    let report = s.screen(&invite("203.0.113.5", "+13125550100", "+12125550199"), at);
    assert_eq!(code(&enforce), Some(403));
    assert!(report.verdict.is_forward());
    assert!(report.would_reject);
    assert_eq!(report.rule, Some(Rule::CallerIdUnowned));
    let report = s.screen(&invite("203.0.113.5", "+12015550100", "+12125550199"), ny(2026, 6, 1, 22, 0, 0));
    assert!(report.verdict.is_forward() && report.would_reject);
    assert_eq!(report.rule, Some(Rule::Hours));
    // Over quota in report mode: forwarded, and the count stays at the cap as in enforce mode.
    for i in 0..5 {
        let d = s.screen(&invite("203.0.113.5", "+12015550100", &format!("+1212555030{i}")), at);
        assert!(d.verdict.is_forward());
        assert_eq!(d.would_reject, i >= 3, "call {i}");
    }
    assert_eq!(s.account_snapshot("lax", at).unwrap().usage.calls_today, 3);
    // Global report mode covers unknown accounts too.
    let s = screener_with_line("report-global", r#"mode = "report""#);
    let d = s.screen(&invite("100.64.0.1", "+12125550100", "+12125550199"), at);
    assert!(d.verdict.is_forward() && d.would_reject);
    assert_eq!(d.rule, Some(Rule::UnknownAccount));
}

#[test]
fn configured_response_forms() {
    let s = screener(
        "responses",
        r#"
[responses.caller_id_unowned]
code = 603
q850 = true
text = "Call blocked by analytics"

[responses.quota]
code = 608
call_info = "https://sipguard.example/jcard"
"#,
    );
    let at = noon();
    let d = s.screen(&invite("192.0.2.10", "+13125550100", "+12125550199"), at);
    assert!(matches!(&*d.verdict, Verdict::Reject { code: 603, reason, .. } if reason == "Network Blocked"));
    assert_eq!(header(&d, "Reason"), Some("Q.850;cause=21;text=\"Call blocked by analytics\""));
    for i in 0..3 {
        s.screen(&invite("192.0.2.10", "+12125550100", &format!("+1212555020{i}")), at);
    }
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+12125550299"), at);
    assert!(matches!(&*d.verdict, Verdict::Reject { code: 608, reason, .. } if reason == "Rejected"));
    assert_eq!(header(&d, "Call-Info"), Some("<https://sipguard.example/jcard>;purpose=jwscard"));
}

#[test]
fn reload_keeps_counters_and_applies_new_limits() {
    let s = screener("reload", "");
    let at = noon();
    for i in 0..3 {
        assert!(s.screen(&invite("192.0.2.10", "+12125550100", &format!("+1212555020{i}")), at).verdict.is_forward());
    }
    let dir = dir("reload2", OWNED);
    let text = BASE.replace("per_day = 3", "per_day = 4");
    s.reload(
        Config::parse(&dir.join("sipguard.toml"), &text).unwrap().screening.unwrap(),
        std::time::SystemTime::now(),
    );
    let later = at + Duration::from_secs(60);
    assert!(s.screen(&invite("192.0.2.10", "+12125550100", "+12125550210"), later).verdict.is_forward());
    assert_eq!(s.screen(&invite("192.0.2.10", "+12125550100", "+12125550211"), later).rule, Some(Rule::Quota));
    assert_eq!(s.account_snapshot("acme", later).unwrap().usage.calls_today, 4);
}

/// STIR in the policy: a signed call waits for its certificate (nothing charged), then
/// passes with its verstat; a weaker attestation than the account's minimum is refused;
/// a call without Identity passes untagged-but-marked in verify mode.
#[test]
fn stir_waits_for_the_certificate_then_tags_or_refuses() {
    use crate::screen::stir::testpki::{Opts, pki};
    use crate::screen::stir::{Outcome, Verstat};
    let p = pki(Opts::default());
    let dir = dir("stir", OWNED);
    std::fs::create_dir_all(dir.join("ca")).unwrap();
    std::fs::write(dir.join("ca/root.pem"), &p.root_pem).unwrap();
    let text = format!(
        "{BASE}\n[[account]]\nid = \"strict\"\nsources = [\"198.18.0.0/24\"]\ncaller_ids = [\"+12015550100\"]\nmin_attestation = \"A\"\n\n[stir]\nmode = \"verify\"\ntrust_anchors = \"ca\"\n"
    );
    let cfg = Config::parse(&dir.join("sipguard.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let s = Screener::new(cfg.screening.unwrap(), Arc::new(ArcSwap::from_pointee(Dnc::default())));
    let now = noon();
    let iat = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let x5u = "https://cert.example.com/sp.pem";
    let mut c = invite("192.0.2.7", "+12015550100", "+12125550199");
    let id = p.identity(x5u, "B", "12015550100", "12125550199", iat);
    c.identity = Some(id.clone().into());
    let Step::Need(Lookup::Certificate { url }) = s.step(&c, now, true) else { panic!("expected a lookup") };
    assert_eq!(url, x5u);
    assert_eq!(s.account_snapshot("acme", now).unwrap().usage.calls_today, 0, "nothing charged while waiting");
    let stir = s.stir().unwrap();
    let trust = stir.config.load_full().unwrap().trust.clone();
    stir.certs.complete(x5u, Ok(vec![p.leaf_der.clone(), p.inter_der.clone()]), &trust, now, Duration::from_secs(3600));
    let Step::Done(d) = s.step(&c, now, true) else { panic!("decided once the certificate is in") };
    assert_eq!(*d.verdict, *Verdict::shared_forward_verstat(Verstat::Passed));
    assert_eq!(d.stir.as_ref().map(|r| r.outcome), Some(Outcome::Passed));
    assert_eq!(s.account_snapshot("acme", now).unwrap().usage.calls_today, 1);
    // The same B-attested call from the account that wants A: refused by `attestation`.
    let mut c2 = invite("198.18.0.9", "+12015550100", "+12125550199");
    c2.identity = Some(id.into());
    let Step::Done(d) = s.step(&c2, now, true) else { panic!() };
    assert_eq!(d.rule, Some(Rule::Attestation));
    assert!(matches!(&*d.verdict, Verdict::Reject { code: 403, .. }));
    // No Identity: forwarded (verify mode) with No-TN-Validation.
    let c3 = invite("192.0.2.7", "+12015550100", "+12125550198");
    let d = s.screen(&c3, now);
    assert_eq!(*d.verdict, *Verdict::shared_forward_verstat(Verstat::None));
}

/// With the Redis backend the quota step asks the store (after every other rule and the
/// local pacing); its answer decides, and each on_failure policy applies when it has none.
fn shared_screener(name: &str, on_failure: &str, nodes: u32) -> Screener {
    let extra = format!(
        "\n[cluster]\nbackend = \"redis\"\nredis = \"redis://127.0.0.1:1/0\"\non_failure = \"{on_failure}\"\nnodes = {nodes}\n"
    );
    screener(name, &extra)
}

fn counting(s: &Screener, to: &str, at: SystemTime) -> Counting {
    match s.step(&invite("192.0.2.10", "+12125550100", to), at, true) {
        Step::Need(Lookup::Counters(c)) => *c,
        other => panic!("expected a counters lookup, got {other:?}"),
    }
}

#[test]
fn shared_counters_are_asked_for_after_every_other_rule() {
    let s = shared_screener("shared-ask", "open", 1);
    let at = noon();
    // Refused before the quota step: no round trip to the store.
    let d = s.step(&invite("192.0.2.10", "+13125550100", "+12125550199"), at, true);
    assert!(matches!(d, Step::Done(ref d) if d.rule == Some(Rule::CallerIdUnowned)), "{d:?}");
    let c = counting(&s, "+12125550199", at);
    let r = &c.reservation;
    assert_eq!((&*r.account, r.caller, r.callee), ("acme", 12125550100, 12125550199));
    assert_eq!(r.caps, [None, Some(3), None, None, None]);
    assert_eq!(r.windows, Windows::at(NY, at));
    // Admitted: forwarded, charged in the store (its release is the shell's), readings
    // include this call.
    let d = s.counted(c, Ok(Tally { admitted: true, values: [5, 2, 0, 0, 0], full: false }), at);
    assert!(d.verdict.is_forward());
    assert!(d.charge.as_ref().is_some_and(|c| c.shared.is_some()));
    assert_eq!(d.counters, vec![CounterReading { name: "account_per_day", value: 3, limit: 3 }]);
    assert_eq!(s.release(&d).map(|r| r.callee), Some(12125550199));
    assert_eq!(s.account_snapshot("acme", at).unwrap().usage.calls_today, 0, "nothing counted on this node");
    // Refused by the store: the quota response, nothing charged.
    let c = counting(&s, "+12125550198", at);
    let d = s.counted(c, Ok(Tally { admitted: false, values: [5, 3, 0, 0, 0], full: false }), at);
    assert_eq!((d.rule, code(&d), d.charge.is_none()), (Some(Rule::Quota), Some(403), true));
}

#[test]
fn each_failure_policy_decides_a_call_the_store_could_not_count() {
    let at = noon();
    let fail = Err(StoreFailure::Timeout);
    // open: forwarded and counted here, for the write-back.
    let s = shared_screener("shared-open", "open", 2);
    for i in 0..5 {
        let d = s.counted(counting(&s, &format!("+1212555030{i}"), at), fail, at);
        assert!(d.verdict.is_forward(), "{d:?}");
        assert!(d.counters.iter().any(|c| c.name == "cluster_unavailable"));
    }
    let taken = s.local_counts(at, true);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].1.day.1, 5, "all five are written back");
    let after = s.local_counts(at, false);
    assert!(after.iter().all(|(_, c)| !c.has_counts()), "taken: nothing left to write twice");
    assert_eq!(after[0].1.seen, (5, 5), "what went to the store counts as the store's");
    // closed: refused with the quota rule's response.
    let s = shared_screener("shared-closed", "closed", 2);
    let d = s.counted(counting(&s, "+12125550301", at), fail, at);
    assert_eq!((d.rule, code(&d)), (Some(Rule::Quota), Some(403)));
    // local: this node's share of what the store last said was left (3 - 1 = 2, over
    // two nodes: 1 call).
    let s = shared_screener("shared-local", "local", 2);
    let c = counting(&s, "+12125550301", at);
    assert!(s.counted(c, Ok(Tally { admitted: true, values: [0, 0, 0, 0, 0], full: false }), at).verdict.is_forward());
    assert!(s.counted(counting(&s, "+12125550302", at), fail, at).verdict.is_forward());
    let d = s.counted(counting(&s, "+12125550303", at), fail, at);
    assert_eq!(d.rule, Some(Rule::Quota), "the node's share is used up");
    // The next day starts from a fresh share (3 / 2 = 1).
    let tomorrow = at + Duration::from_secs(86_400);
    assert!(s.counted(counting(&s, "+12125550304", tomorrow), fail, tomorrow).verdict.is_forward());
    assert_eq!(s.counted(counting(&s, "+12125550305", tomorrow), fail, tomorrow).rule, Some(Rule::Quota));
}

#[test]
fn saved_counts_of_ended_windows_are_not_restored() {
    let s = screener("restore", "");
    let at = noon();
    for i in 0..2 {
        assert!(s.screen(&invite("192.0.2.10", "+12125550100", &format!("+1212555040{i}")), at).verdict.is_forward());
    }
    let saved = s.local_counts(at, false);
    let fresh = screener("restore2", "");
    assert_eq!(fresh.merge_counts(&saved, at), 2);
    assert_eq!(fresh.account_snapshot("acme", at).unwrap().usage.calls_today, 2);
    let next_day = screener("restore3", "");
    assert_eq!(next_day.merge_counts(&saved, at + Duration::from_secs(86_400)), 0, "yesterday's counts");
    // An account that no longer exists is skipped.
    let gone = vec![(Arc::from("nobody"), saved[0].1.clone())];
    assert_eq!(screener("restore4", "").merge_counts(&gone, at), 0);
}

#[test]
fn a_suspension_refuses_before_every_other_rule_and_report_mode_only_logs_it() {
    use crate::screen::suspension::{Subject, Suspension};
    let s = screener("suspended", "");
    let at = ny(2026, 3, 10, 12, 0, 0);
    let hour = Duration::from_secs(3600);
    let suspend = |subject, id: &str, account: &str| {
        s.suspensions().suspend(Suspension {
            subject,
            id: id.into(),
            account: account.into(),
            since: at,
            until: at + hour,
            source: "behaviour".into(),
            cause: "asr 0.05 < 0.15".into(),
        })
    };
    assert!(suspend(Subject::CallerId, "+12125550100", "acme"));
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+12125550199"), at);
    assert_eq!((d.rule, code(&d)), (Some(Rule::Suspended), Some(403)));
    let Verdict::Reject { headers, .. } = &*d.verdict else { unreachable!() };
    assert_eq!(headers[0].value, "SIP;cause=403;text=\"Calling suspended until 2026-03-10T17:00:00Z\"");
    assert!(d.detail.as_deref().unwrap().contains("+12125550100 suspended by behaviour"), "{:?}", d.detail);
    assert!(d.charge.is_none(), "a refused call takes no quota");
    // Another caller ID of the account passes; at the end of the hour the number does too.
    assert_eq!(s.screen(&invite("192.0.2.10", "+16465550123", "+12125550199"), at).rule, None);
    assert_eq!(s.screen(&invite("192.0.2.10", "+12125550100", "+12125550199"), at + hour).rule, None);
    // Report mode: logged as would_reject, forwarded.
    assert!(suspend(Subject::Account, "lax", "lax"));
    let d = s.screen(&invite("203.0.113.5", "+12015550100", "+12125550199"), at);
    assert_eq!((d.rule, d.would_reject, code(&d)), (Some(Rule::Suspended), true, None));
    // Survives a reload: the store is not part of the policy.
    let dir = dir("suspended", OWNED);
    let cfg = Config::parse(&dir.join("sipguard.toml"), BASE).unwrap();
    s.reload(cfg.screening.unwrap(), at);
    let d = s.screen(&invite("192.0.2.10", "+12125550100", "+12125550199"), at);
    assert_eq!(d.rule, Some(Rule::Suspended));
}
