//! Metric names and the calls that record them (the `metrics` facade; the admin listener
//! installs the Prometheus recorder). Label values are bounded: methods outside the known
//! set are `other`, and no number from a message ever becomes a label.
//!
//! The per-message counters are handles registered once ([`register`]), so a message costs
//! an atomic add instead of a label hash and registry look-up under the recorder.

use crate::config::server::Transport;
use metrics::{Counter, Histogram, counter, gauge, histogram};
use std::sync::{Mutex, OnceLock};

use crate::proxy::events::{self, Events, Inward, METHODS};
use crate::screen::Decision;
use std::time::Instant;

/// Buckets of `sipguard_screen_seconds`: screening takes microseconds; the top buckets catch
/// a stalled policy or list look-up.
pub const SCREEN_SECONDS_BUCKETS: [f64; 12] =
    [2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1];

const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];
/// `sipguard_messages_in_total` rows per transport: requests by method (+ other), responses.
const IN_ROWS: usize = METHODS.len() + 2;
const OUT_KINDS: [&str; 3] = ["request", "reply", "response"];

/// Handles of the metrics recorded for every message.
struct Hot {
    messages_in: [[Counter; IN_ROWS]; 2],
    messages_out: [[Counter; OUT_KINDS.len()]; 2],
    cache_hits: Counter,
    screen_seconds: Histogram,
    udp_batches: Counter,
    udp_batch_waits: Counter,
}

impl Hot {
    fn register() -> Hot {
        let in_row = |t: Transport| {
            std::array::from_fn(|i| {
                let (kind, method) = match METHODS.get(i) {
                    Some(m) => ("request", *m),
                    None if i == METHODS.len() => ("request", "other"),
                    None => ("response", "-"),
                };
                counter!("sipguard_messages_in_total", "transport" => t.label(), "kind" => kind, "method" => method)
            })
        };
        let out_row = |t: Transport| {
            OUT_KINDS.map(|kind| counter!("sipguard_messages_out_total", "transport" => t.label(), "kind" => kind))
        };
        Hot {
            messages_in: TRANSPORTS.map(in_row),
            messages_out: TRANSPORTS.map(out_row),
            cache_hits: counter!("sipguard_verdict_cache_hits_total"),
            screen_seconds: histogram!("sipguard_screen_seconds"),
            udp_batches: counter!("sipguard_udp_receive_batches_total"),
            udp_batch_waits: counter!("sipguard_udp_batch_waits_total"),
        }
    }
}

static HOT: OnceLock<Hot> = OnceLock::new();

/// Register the per-message handles with the installed recorder. Call right after installing
/// it: handles taken before any recorder exists record nothing, for good.
pub fn register() {
    HOT.get_or_init(Hot::register);
}

fn hot() -> &'static Hot {
    HOT.get_or_init(Hot::register)
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

pub fn message_in(t: Transport, kind: Inward) {
    let row = match kind {
        Inward::Response => IN_ROWS - 1,
        Inward::Request(method) => METHODS.iter().position(|k| *k == method).unwrap_or(METHODS.len()),
    };
    if let Some(c) = hot().messages_in.get(transport_index(t)).and_then(|r| r.get(row)) {
        c.increment(1);
    }
}

pub fn message_out(t: Transport, kind: &'static str) {
    let Some(col) = OUT_KINDS.iter().position(|k| *k == kind) else {
        return counter!("sipguard_messages_out_total", "transport" => t.label(), "kind" => kind).increment(1);
    };
    if let Some(c) = hot().messages_out.get(transport_index(t)).and_then(|r| r.get(col)) {
        c.increment(1);
    }
}

/// A reply sipguard generated itself (rejects and errors): not per forwarded message, so the
/// label look-up is affordable.
/// Handles of `sipguard_replies_total` by code, registered on first use (a handful of codes
/// occur), so a reply costs no label formatting or registry look-up.
static REPLIES: Mutex<Vec<(u16, Counter)>> = Mutex::new(Vec::new());

pub fn reply_sent(code: u16) {
    let mut handles = REPLIES.lock().unwrap_or_else(|e| e.into_inner());
    match handles.iter().find(|(c, _)| *c == code) {
        Some((_, h)) => h.increment(1),
        None => {
            // Codes come from [responses] (400-699) and the fixed answers to bad requests.
            let h = counter!("sipguard_replies_total", "code" => code.to_string());
            h.increment(1);
            handles.push((code, h));
        }
    }
}

/// A local reply sent without its extra headers, which would have made it larger than the
/// request.
pub fn reply_trimmed() {
    counter!("sipguard_replies_trimmed_total").increment(1);
}

/// A new call refused with 503 because the core fell behind.
pub fn shed() {
    counter!("sipguard_shed_total").increment(1);
}

/// A source banned by the flood defence (logged once per ban).
pub fn banned() {
    counter!("sipguard_bans_total").increment(1);
}

/// A request refused with 403 Relaying Denied: its next hop is outside the relay policy.
pub fn relay_denied() {
    counter!("sipguard_relay_denied_total").increment(1);
}

/// A call's STIR verification outcome by the attestation its PASSporT claimed.
pub fn stir(outcome: &'static str, attestation: &'static str) {
    counter!("sipguard_stir_verifications_total", "outcome" => outcome, "attestation" => attestation).increment(1);
}

/// One x5u certificate fetch, by result (`ok`, `error`, `refused`).
pub fn stir_fetch(result: &'static str, seconds: f64) {
    counter!("sipguard_stir_fetches_total", "result" => result).increment(1);
    metrics::histogram!("sipguard_stir_fetch_seconds").record(seconds);
}

/// Calls held while their certificate is fetched.
pub fn stir_pending(n: usize) {
    metrics::gauge!("sipguard_stir_pending_calls").set(n as f64);
}

/// Whether the cluster's Redis answers (1) or not (0).
pub fn cluster_up(up: bool) {
    metrics::gauge!("sipguard_cluster_backend_up").set(if up { 1.0 } else { 0.0 });
}

/// A call, release or write-back the cluster's Redis did not serve, by kind.
pub fn cluster_failure(kind: &'static str) {
    counter!("sipguard_cluster_failures_total", "kind" => kind).increment(1);
}

/// Round trips to the cluster's Redis for calls, by outcome (admitted / refused).
pub fn cluster_reservation(admitted: bool, seconds: f64) {
    counter!("sipguard_cluster_reservations_total", "result" => if admitted { "admitted" } else { "refused" })
        .increment(1);
    metrics::histogram!("sipguard_cluster_reserve_seconds").record(seconds);
}

/// A message neither forwarded nor answered because something is wrong with it, its peer or
/// this proxy's limits.
pub fn dropped(reason: &'static str) {
    counter!("sipguard_drops_total", "reason" => reason).increment(1);
}

/// A message consumed by design (keepalive, the ACK of a local reply, a retransmission of a
/// call that waits): normal traffic, counted apart from the drops.
pub fn absorbed(reason: &'static str) {
    counter!("sipguard_absorbed_total", "reason" => reason).increment(1);
}

/// One UDP receive batch; `waited` when the thread then waited for the next one to gather.
/// (Datagrams in / batches is the average batch.)
pub fn udp_batch(waited: bool) {
    let h = hot();
    h.udp_batches.increment(1);
    if waited {
        h.udp_batch_waits.increment(1);
    }
}

pub fn cache_hit() {
    hot().cache_hits.increment(1);
}

/// Verdict counter handles by (verdict, rule, account), so a screened call costs a hash and
/// an increment instead of a label look-up in the registry. Accounts come from the config,
/// so the map is bounded by it; the cap only guards against a config with huge numbers.
static VERDICTS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<u64, metrics::Counter>>> =
    std::sync::LazyLock::new(Default::default);
const VERDICT_HANDLES_CAP: usize = 100_000;

/// One screened INVITE. `account` is the configured id (bounded by the config), or "-".
pub fn verdict(verdict: &'static str, rule: &'static str, account: &str, seconds: f64) {
    let key = [verdict.as_bytes(), rule.as_bytes(), account.as_bytes()]
        .iter()
        .fold(0u64, |h, p| xxhash_rust::xxh3::xxh3_64_with_seed(p, h));
    let make =
        || counter!("sipguard_verdicts_total", "verdict" => verdict, "rule" => rule, "account" => account.to_string());
    let mut map = VERDICTS.lock().unwrap_or_else(|e| e.into_inner());
    match map.get(&key) {
        Some(c) => c.increment(1),
        None if map.len() < VERDICT_HANDLES_CAP => {
            let c = make();
            c.increment(1);
            map.insert(key, c);
        }
        None => make().increment(1),
    }
    drop(map);
    hot().screen_seconds.record(seconds);
}

/// Outcome of a configuration reload (SIGHUP or `POST /reload`).
pub fn reload(ok: bool, unix_seconds: f64) {
    let result = if ok { "ok" } else { "failed" };
    counter!("sipguard_reloads_total", "result" => result).increment(1);
    gauge!("sipguard_config_last_reload_successful").set(if ok { 1.0 } else { 0.0 });
    gauge!("sipguard_config_last_reload_timestamp_seconds").set(unix_seconds);
}

/// One do-not-call list as loaded: entries, file bytes, and when it was built (its version).
pub fn dnc_list(name: &str, entries: u64, bytes: u64, built_unix_seconds: Option<u64>) {
    let list = name.to_string();
    gauge!("sipguard_dnc_list_entries", "list" => list.clone()).set(entries as f64);
    gauge!("sipguard_dnc_list_bytes", "list" => list.clone()).set(bytes as f64);
    if let Some(t) = built_unix_seconds {
        gauge!("sipguard_dnc_list_built_timestamp_seconds", "list" => list).set(t as f64);
    }
}

/// Constant series: which version runs, and since when.
pub fn started(version: &'static str, unix_seconds: f64) {
    gauge!("sipguard_build_info", "version" => version).set(1.0);
    gauge!("sipguard_start_time_seconds").set(unix_seconds);
}

/// The core's counts into the process's metrics recorder.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recorder;

impl Events for Recorder {
    fn message_in(&self, t: Transport, kind: Inward) {
        message_in(t, kind)
    }
    fn message_out(&self, t: Transport, kind: &'static str) {
        message_out(t, kind)
    }
    fn reply(&self, code: u16, trimmed: bool) {
        if trimmed {
            reply_trimmed();
        }
        reply_sent(code)
    }
    fn shed(&self) {
        shed()
    }
    fn cache_hit(&self) {
        cache_hit()
    }
    fn relay_denied(&self) {
        relay_denied()
    }
    fn stopwatch(&self) -> Option<Instant> {
        Some(Instant::now())
    }
    fn decided(&self, d: &Decision, started: Option<Instant>) {
        let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        verdict(
            events::verdict_label(d),
            d.rule.map_or("-", |r| r.name()),
            d.account.as_deref().unwrap_or("-"),
            seconds,
        );
        if let Some(r) = &d.stir {
            stir(r.outcome.label(), r.attestation.map_or("-", |a| a.as_str()));
        }
    }
}

/// Call behaviour at a scrape: each tracked account's figures over its window (labels: the
/// configured account ids only, never a caller ID), the live-call tracker's size and what it
/// saw, and the suspensions in force by subject and source. A figure with no calls to judge
/// (ASR without attempts, ACD without an ended call) reads NaN.
pub fn behaviour(
    accounts: &[(std::sync::Arc<str>, crate::screen::behaviour::Figures)],
    tracker: Option<&crate::screen::behaviour::Tracker>,
    suspensions: &[crate::screen::suspension::Suspension],
) {
    use std::sync::atomic::Ordering::Relaxed;
    for (id, f) in accounts {
        let a = id.to_string();
        let g = |name: &'static str, v: f64| gauge!(name, "account" => a.clone()).set(v);
        g("sipguard_behaviour_attempts", f.attempts as f64);
        g("sipguard_behaviour_answered", f.answered as f64);
        g("sipguard_behaviour_asr", f.asr.unwrap_or(f64::NAN));
        g("sipguard_behaviour_acd_seconds", f.acd_seconds.unwrap_or(f64::NAN));
        g("sipguard_behaviour_short_calls", f.short_calls as f64);
        g("sipguard_behaviour_short_call_ratio", f.short_call_ratio.unwrap_or(f64::NAN));
        g("sipguard_behaviour_longest_sequential_run", f64::from(f.longest_sequential_run));
        g("sipguard_behaviour_concurrent_calls", f64::from(f.concurrent));
    }
    if let Some(tracker) = tracker {
        gauge!("sipguard_behaviour_tracked_calls").set(tracker.len() as f64);
        let s = &tracker.stats;
        for (event, n) in [
            ("answered", &s.answered),
            ("unanswered", &s.unanswered),
            ("ended", &s.ended),
            ("expired_ringing", &s.expired_ringing),
            ("expired_answered", &s.expired_answered),
            ("untracked", &s.untracked),
            ("retransmission", &s.retransmissions),
            ("unproven_bye", &s.unproven_byes),
        ] {
            counter!("sipguard_behaviour_call_events_total", "event" => event).absolute(n.load(Relaxed));
        }
    }
    let mut active: std::collections::BTreeMap<(&'static str, &str), u64> = Default::default();
    for x in suspensions {
        let subject = match x.subject {
            crate::screen::suspension::Subject::Account => "account",
            crate::screen::suspension::Subject::CallerId => "caller_id",
        };
        // Sources are the code's own words (behaviour, complaints); anything else is `other`.
        let source = match x.source.as_str() {
            "behaviour" => "behaviour",
            "complaints" => "complaints",
            _ => "other",
        };
        *active.entry((subject, source)).or_default() += 1;
    }
    for subject in ["account", "caller_id"] {
        for source in ["behaviour", "complaints", "other"] {
            let n = active.get(&(subject, source)).copied().unwrap_or(0);
            gauge!("sipguard_suspensions_active", "subject" => subject, "source" => source).set(n as f64);
        }
    }
}

/// `sipguard_complaints_total{account}`: complaints taken (this node, replayed included),
/// per attributed account or `unattributed`; the labels are configured accounts only.
pub fn complaints(account: &str, total: u64) {
    counter!("sipguard_complaints_total", "account" => account.to_string()).absolute(total);
}

/// `sipguard_complaint_index_calls`: forwarded calls in the attribution index.
pub fn complaint_index(calls: usize) {
    gauge!("sipguard_complaint_index_calls").set(calls as f64);
}
