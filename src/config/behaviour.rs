//! `[screening.behaviour]` and `[[account]] behaviour = {...}`: call behaviour figures and
//! rules, validated into `BehaviourConfig` and per-account `Limits`.
use super::{Diagnostics, Spanned};
use crate::screen::behaviour::{Action, BehaviourConfig, DEFAULT_MAX_TRACKED_CALLS, Limits};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawBehaviour {
    pub window_minutes: Option<Spanned<i64>>,
    pub min_attempts: Option<Spanned<i64>>,
    pub min_asr: Option<Spanned<f64>>,
    pub short_call_seconds: Option<Spanned<i64>>,
    pub max_short_call_ratio: Option<Spanned<f64>>,
    pub min_acd_seconds: Option<Spanned<i64>>,
    pub max_concurrent: Option<Spanned<i64>>,
    pub max_sequential: Option<Spanned<i64>>,
    pub sequential_gap: Option<Spanned<i64>>,
    pub max_distinct_callees_per_hour: Option<Spanned<i64>>,
    pub max_call_seconds: Option<Spanned<i64>>,
    /// Global only (`[screening.behaviour]`).
    pub max_tracked_calls: Option<Spanned<i64>>,
    pub action: Option<Spanned<String>>,
    pub suspend_minutes: Option<Spanned<i64>>,
}

/// Seven days: the longest window and suspension a key may ask for is far beyond it, but
/// a window's buckets must stay meaningful and its sums small.
const MAX_WINDOW_MINUTES: i64 = 7 * 24 * 60;

/// The limits `raw` sets on top of `base` (`section` names it in errors).
pub fn limits(raw: &RawBehaviour, base: &Limits, section: &str, d: &mut Diagnostics<'_>) -> Limits {
    let int = |d: &mut Diagnostics<'_>, v: &Option<Spanned<i64>>, key: &str, default: u32, min: i64, max: i64| {
        u32::try_from(d.int(v, &format!("{section}.{key}"), i64::from(default), min, max)).unwrap_or(default)
    };
    let opt = |d: &mut Diagnostics<'_>, v: &Option<Spanned<i64>>, key: &str, default: Option<u32>, max: i64| match v {
        None => default,
        Some(_) => u32::try_from(d.int(v, &format!("{section}.{key}"), 1, 1, max)).ok(),
    };
    let ratio = |d: &mut Diagnostics<'_>, v: &Option<Spanned<f64>>, key: &str, default: Option<f64>| match v {
        None => default,
        Some(s) if (0.0..=1.0).contains(s.get_ref()) => Some(*s.get_ref()),
        Some(s) => {
            d.error(s.span(), format!("{section}.{key} = {}: must be between 0 and 1", s.get_ref()));
            default
        }
    };
    let action = match &raw.action {
        None => base.action,
        Some(a) => Action::parse(a.get_ref().trim()).unwrap_or_else(|| {
            d.error(
                a.span(),
                format!(
                    "{section}.action = {:?}: expected \"flag\", \"suspend_caller_id\" or \"suspend_account\"",
                    a.get_ref()
                ),
            );
            base.action
        }),
    };
    Limits {
        window_minutes: int(d, &raw.window_minutes, "window_minutes", base.window_minutes, 1, MAX_WINDOW_MINUTES),
        min_attempts: int(d, &raw.min_attempts, "min_attempts", base.min_attempts, 1, 1_000_000_000),
        min_asr: ratio(d, &raw.min_asr, "min_asr", base.min_asr),
        short_call_seconds: int(d, &raw.short_call_seconds, "short_call_seconds", base.short_call_seconds, 1, 86_400),
        max_short_call_ratio: ratio(d, &raw.max_short_call_ratio, "max_short_call_ratio", base.max_short_call_ratio),
        min_acd_seconds: opt(d, &raw.min_acd_seconds, "min_acd_seconds", base.min_acd_seconds, 86_400),
        max_concurrent: opt(d, &raw.max_concurrent, "max_concurrent", base.max_concurrent, 10_000_000),
        max_sequential: opt(d, &raw.max_sequential, "max_sequential", base.max_sequential, 1_000_000),
        sequential_gap: u64::from(int(d, &raw.sequential_gap, "sequential_gap", base.sequential_gap as u32, 1, 1000)),
        max_distinct_callees_per_hour: opt(
            d,
            &raw.max_distinct_callees_per_hour,
            "max_distinct_callees_per_hour",
            base.max_distinct_callees_per_hour,
            10_000_000,
        ),
        max_call_seconds: int(d, &raw.max_call_seconds, "max_call_seconds", base.max_call_seconds, 1, 7 * 86_400),
        action,
        suspend_minutes: int(d, &raw.suspend_minutes, "suspend_minutes", base.suspend_minutes, 1, 366 * 24 * 60),
    }
}

/// `[screening.behaviour]`.
pub fn validate(raw: &RawBehaviour, d: &mut Diagnostics<'_>) -> BehaviourConfig {
    let limits = limits(raw, &Limits::default(), "screening.behaviour", d);
    let max_tracked_calls = d.int(
        &raw.max_tracked_calls,
        "screening.behaviour.max_tracked_calls",
        DEFAULT_MAX_TRACKED_CALLS as i64,
        1,
        100_000_000,
    );
    BehaviourConfig {
        limits,
        max_tracked_calls: usize::try_from(max_tracked_calls).unwrap_or(DEFAULT_MAX_TRACKED_CALLS),
    }
}

/// An account's `behaviour = {...}` over the global defaults.
pub fn account(raw: &RawBehaviour, base: &Limits, id: &str, d: &mut Diagnostics<'_>) -> Limits {
    if let Some(v) = &raw.max_tracked_calls {
        d.error(
            v.span(),
            format!(
                "account `{id}` behaviour.max_tracked_calls: set it in [screening.behaviour] (one cap for all accounts)"
            ),
        );
    }
    limits(raw, base, &format!("account `{id}` behaviour"), d)
}

/// Rules that need the BYE (durations, the end of answered calls) are refused when the BYE
/// does not come through us, i.e. without `server.record_route`.
pub fn require_bye(raw: &RawBehaviour, where_: &str, d: &mut Diagnostics<'_>) {
    let keys: [(&str, Option<std::ops::Range<usize>>); 3] = [
        ("max_short_call_ratio", raw.max_short_call_ratio.as_ref().map(Spanned::span)),
        ("min_acd_seconds", raw.min_acd_seconds.as_ref().map(Spanned::span)),
        ("max_concurrent", raw.max_concurrent.as_ref().map(Spanned::span)),
    ];
    for (key, span) in keys {
        if let Some(span) = span {
            d.error(
                span,
                format!(
                    "{where_}.{key} needs the BYE of each call, which passes through sipguard only with server.record_route = true"
                ),
            );
        }
    }
}
