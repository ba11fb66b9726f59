//! `[screening]`, `[screening.quota]`, `[screening.checks]`, `[screening.hours]`,
//! `[responses.<rule>]` and `[[account]]`, validated into `ScreeningConfig`.
//!
//! Response names: the rule names (`Rule::name`), plus names starting with `dnc_` that `[[dnc.list]]`
//! entries may refer to; any other name is an error, so typos are caught here and the DNC
//! validator only has to check that the names it references exist.
use super::{Diagnostics, Spanned, cidr};
use crate::screen::Rule;
use crate::screen::caller_id::{Checks, OwnedNumbers};
use crate::screen::hours::Hours;
use crate::screen::number::{self, NumberPlan};
use crate::screen::prefix::{PrefixMap, parse_prefix};
use crate::screen::quota::QuotaLimits;
use crate::screen::responses::{ReasonForm, Response, Responses, default_for, standard_phrase};
use crate::screen::stir::{Attestation, StirConfig};
use chrono::NaiveTime;
use chrono_tz::Tz;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
pub struct RawScreening {
    pub mode: Option<Spanned<String>>,
    pub account_header: Option<Spanned<String>>,
    pub trusted_sources: Option<Vec<Spanned<String>>>,
    pub unknown_account: Option<Spanned<String>>,
    pub default_country: Option<Spanned<String>>,
    pub caller_id_numbers: Option<Spanned<String>>,
    pub trust_pai: Option<bool>,
    pub forward_account_header: Option<bool>,
    pub quota_tz: Option<Spanned<String>>,
    pub max_tracked_numbers: Option<Spanned<i64>>,
    pub min_owned_prefix_digits: Option<Spanned<i64>>,
    #[serde(default)]
    pub checks: RawChecks,
    #[serde(default)]
    pub quota: RawQuota,
    pub hours: Option<RawHours>,
    pub behaviour: Option<super::behaviour::RawBehaviour>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawChecks {
    pub valid: Option<bool>,
    pub valid_callee: Option<bool>,
    pub owned: Option<bool>,
    pub same_as_callee: Option<bool>,
    pub from_pai_mismatch: Option<bool>,
    pub neighbour_digits: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawQuota {
    pub per_second: Option<Spanned<i64>>,
    pub burst: Option<Spanned<i64>>,
    pub per_minute: Option<Spanned<i64>>,
    pub per_hour: Option<Spanned<i64>>,
    pub per_day: Option<Spanned<i64>>,
    pub per_caller_id_per_day: Option<Spanned<i64>>,
    pub per_callee_per_day: Option<Spanned<i64>>,
    pub per_callee_per_week: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHours {
    pub start: Option<Spanned<String>>,
    pub end: Option<Spanned<String>>,
    pub default_tz: Option<Spanned<String>>,
    #[serde(default)]
    pub zone: Vec<RawZone>,
}

#[derive(Debug, Deserialize)]
pub struct RawZone {
    pub prefix: Spanned<String>,
    pub tz: Spanned<String>,
}

/// `[responses.<name>]` tables by name.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct RawResponses(pub BTreeMap<String, Spanned<RawResponse>>);

#[derive(Debug, Default, Deserialize)]
pub struct RawResponse {
    pub code: Option<Spanned<i64>>,
    /// Reason phrase of the status line.
    pub reason: Option<Spanned<String>>,
    /// `text` of the Reason header.
    pub text: Option<Spanned<String>>,
    /// Write the Reason header as `Q.850;cause=21` (ATIS-1000099 603+ form).
    pub q850: Option<bool>,
    /// URL for `Call-Info: <URL>;purpose=jwscard` (RFC 8688, 608 only).
    pub call_info: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RawAccount {
    pub id: Spanned<String>,
    pub sources: Option<Vec<Spanned<String>>>,
    pub caller_ids: Option<Vec<Spanned<String>>>,
    pub quota: Option<RawQuota>,
    pub mode: Option<Spanned<String>>,
    pub category: Option<Spanned<String>>,
    pub min_attestation: Option<Spanned<String>>,
    pub behaviour: Option<super::behaviour::RawBehaviour>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    /// Calls that would be rejected are forwarded and logged as `would_reject`.
    Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownAccount {
    Reject,
    Forward,
}

#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub id: Arc<str>,
    pub sources: Vec<IpNet>,
    /// From owned.csv and `caller_ids`.
    pub owned: OwnedNumbers,
    /// Defaults with this account's overrides applied.
    pub quota: QuotaLimits,
    pub mode: Mode,
    pub category: Option<Arc<str>>,
    /// Lowest SHAKEN attestation accepted from this account's verified calls (`[stir]`).
    pub min_attestation: Option<Attestation>,
    /// Call behaviour limits (`[screening.behaviour]` with this account's overrides); None:
    /// its behaviour is not tracked.
    pub behaviour: Option<crate::screen::behaviour::Limits>,
}

#[derive(Debug, Clone)]
pub struct ScreeningConfig {
    pub mode: Mode,
    pub account_header: Option<Arc<str>>,
    pub trusted_sources: Vec<IpNet>,
    pub unknown_account: UnknownAccount,
    pub plan: Option<NumberPlan>,
    pub trust_pai: bool,
    /// Pass the account header on to the next hop (it is removed by default: it is ours).
    pub forward_account_header: bool,
    pub checks: Checks,
    pub quota_tz: Tz,
    pub max_tracked_numbers: usize,
    pub hours: Option<Hours>,
    pub responses: Responses,
    pub accounts: Vec<AccountConfig>,
    /// `[stir]`, set by `Config::parse` (the section is validated on its own).
    pub stir: Option<StirConfig>,
    /// `[cluster]` with the Redis backend, set by `Config::parse`.
    pub cluster: Option<crate::screen::quota::shared::SharedCounters>,
    /// `[screening.behaviour]`: the tracker's cap (and the defaults accounts start from).
    pub behaviour: Option<crate::screen::behaviour::BehaviourConfig>,
}

/// Default cap on numbers tracked per account and window (per-callee / per-caller-ID maps).
pub const DEFAULT_MAX_TRACKED: usize = 1_000_000;

pub fn validate(
    raw: &RawScreening,
    accounts: &[RawAccount],
    responses: &RawResponses,
    d: &mut Diagnostics<'_>,
) -> Option<ScreeningConfig> {
    let before = d.errors.len();
    let mode = raw.mode.as_ref().map_or(Mode::Enforce, |m| parse_mode(m, d));
    let unknown_account = match raw.unknown_account.as_ref().map(|u| (u.get_ref().as_str(), u.span())) {
        None | Some(("reject", _)) => UnknownAccount::Reject,
        Some(("forward", _)) => UnknownAccount::Forward,
        Some((other, span)) => {
            d.error(span, format!("screening.unknown_account `{other}`: expected \"reject\" or \"forward\""));
            UnknownAccount::Reject
        }
    };
    let trusted_sources =
        raw.trusted_sources.as_deref().unwrap_or_default().iter().filter_map(|s| cidr(s, d)).collect();
    let account_header = raw.account_header.as_ref().and_then(|h| {
        let name = h.get_ref().trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            d.error(h.span(), format!("screening.account_header `{name}`: not a header name"));
            return None;
        }
        if raw.trusted_sources.as_ref().is_none_or(Vec::is_empty) {
            d.error(h.span(), "screening.account_header is only trusted from `trusted_sources`, which is empty");
        }
        Some(Arc::from(name))
    });
    let plan = raw.default_country.as_ref().and_then(|c| {
        let plan = NumberPlan::for_country(c.get_ref());
        if plan.is_none() {
            d.error(c.span(), format!("screening.default_country `{}`: not an ISO 3166 region code", c.get_ref()));
        }
        plan
    });
    let quota_tz = raw.quota_tz.as_ref().map_or(Tz::UTC, |z| zone(z, d));
    let max_tracked_numbers = raw
        .max_tracked_numbers
        .as_ref()
        .and_then(|v| count(v, "screening.max_tracked_numbers", d))
        .map_or(DEFAULT_MAX_TRACKED, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let checks = validate_checks(&raw.checks, d);
    let min_block = u32::try_from(d.int(
        &raw.min_owned_prefix_digits,
        "screening.min_owned_prefix_digits",
        DEFAULT_MIN_OWNED_PREFIX_DIGITS,
        0,
        14,
    ))
    .unwrap_or(0);
    let default_quota = validate_quota(&raw.quota, "screening.quota", d);
    let hours = raw.hours.as_ref().and_then(|h| validate_hours(h, d));
    let responses = validate_responses(responses, d);
    let behaviour = raw.behaviour.as_ref().map(|b| super::behaviour::validate(b, d));
    let base_limits = behaviour.as_ref().map(|b| b.limits).unwrap_or_default();

    // Accounts: [[account]] blocks first, then ids only named in owned.csv.
    let mut ids: HashMap<Arc<str>, usize> = HashMap::new();
    let mut out: Vec<AccountConfig> = Vec::new();
    let mut seen_nets: HashMap<IpNet, Arc<str>> = HashMap::new();
    for a in accounts {
        let id = a.id.get_ref().trim();
        if !valid_id(id) {
            d.error(a.id.span(), format!("account id `{id}`: use letters, digits, `-`, `_`, `.`"));
            continue;
        }
        let id: Arc<str> = id.into();
        if ids.contains_key(&id) {
            d.error(a.id.span(), format!("account `{id}` is defined twice"));
            continue;
        }
        let mut sources = Vec::new();
        for s in a.sources.as_deref().unwrap_or_default() {
            let Some(net) = cidr(s, d) else { continue };
            if let Some(other) = seen_nets.insert(net, id.clone()) {
                d.error(s.span(), format!("source {net} is already account `{other}`'s"));
            }
            sources.push(net);
        }
        let mut owned = OwnedNumbers::default();
        for c in a.caller_ids.as_deref().unwrap_or_default() {
            match parse_owned(c.get_ref(), plan.as_ref(), min_block) {
                Ok(o) => o.add_to(&mut owned),
                Err(e) => d.error(c.span(), format!("account `{id}` caller_ids: {e}")),
            }
        }
        let quota = match &a.quota {
            Some(q) => default_quota.overridden_by(&validate_quota(q, "account quota", d)),
            None => default_quota,
        };
        let category = a.category.as_ref().map(|c| Arc::from(c.get_ref().trim()));
        let account_mode = a.mode.as_ref().map_or(mode, |m| parse_mode(m, d));
        let min_attestation = a.min_attestation.as_ref().and_then(|m| match Attestation::parse(m.get_ref().trim()) {
            Some(att) => Some(att),
            None => {
                d.error(
                    m.span(),
                    format!("account `{id}` min_attestation = {:?}: must be \"A\", \"B\" or \"C\"", m.get_ref()),
                );
                None
            }
        });
        let account_behaviour = match &a.behaviour {
            Some(b) => Some(super::behaviour::account(b, &base_limits, &id, d)),
            None => behaviour.as_ref().map(|b| b.limits),
        };
        ids.insert(id.clone(), out.len());
        out.push(AccountConfig {
            id,
            sources,
            owned,
            quota,
            mode: account_mode,
            category,
            min_attestation,
            behaviour: account_behaviour,
        });
    }
    if let Some(file) = &raw.caller_id_numbers {
        load_owned_csv(file, plan.as_ref(), min_block, &mut ids, &mut out, default_quota, mode, d);
        // Accounts only named in the CSV take the global behaviour limits.
        for a in out.iter_mut().filter(|a| a.behaviour.is_none()) {
            a.behaviour = behaviour.as_ref().map(|b| b.limits);
        }
    }
    if out.is_empty() && unknown_account == UnknownAccount::Reject {
        let at = d.text.find("[screening]").unwrap_or(0);
        d.error(at..at, "[screening] has no accounts ([[account]] or caller_id_numbers): every call would be rejected");
    }
    (d.errors.len() == before).then_some(ScreeningConfig {
        mode,
        account_header,
        trusted_sources,
        unknown_account,
        plan,
        trust_pai: raw.trust_pai.unwrap_or(true),
        forward_account_header: raw.forward_account_header.unwrap_or(false),
        checks,
        quota_tz,
        max_tracked_numbers,
        hours,
        responses,
        stir: None,
        cluster: None,
        behaviour: match behaviour {
            // Accounts with limits of their own are tracked even without the section.
            None if out.iter().any(|a| a.behaviour.is_some()) => Some(Default::default()),
            b => b,
        },
        accounts: out,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_mode(m: &Spanned<String>, d: &mut Diagnostics<'_>) -> Mode {
    match m.get_ref().as_str() {
        "enforce" => Mode::Enforce,
        "report" => Mode::Report,
        other => {
            d.error(m.span(), format!("mode `{other}`: expected \"enforce\" or \"report\""));
            Mode::Enforce
        }
    }
}

/// A network (`192.0.2.0/24`) or a single address.
fn zone(z: &Spanned<String>, d: &mut Diagnostics<'_>) -> Tz {
    z.get_ref().trim().parse::<Tz>().unwrap_or_else(|_| {
        d.error(z.span(), format!("bad time zone `{}`: expected an IANA name such as America/New_York", z.get_ref()));
        Tz::UTC
    })
}

/// A positive integer setting.
fn count(v: &Spanned<i64>, what: &str, d: &mut Diagnostics<'_>) -> Option<u64> {
    match u64::try_from(*v.get_ref()) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            d.error(v.span(), format!("{what} must be at least 1 (leave it out for no limit)"));
            None
        }
    }
}

fn validate_checks(raw: &RawChecks, d: &mut Diagnostics<'_>) -> Checks {
    let def = Checks::default();
    let neighbour_digits = match &raw.neighbour_digits {
        None => 0,
        Some(v) => match u8::try_from(*v.get_ref()) {
            Ok(n) if n <= 15 => n,
            _ => {
                d.error(v.span(), "screening.checks.neighbour_digits: expected 0 (off) to 15");
                0
            }
        },
    };
    let valid = raw.valid.unwrap_or(def.valid);
    Checks {
        valid,
        valid_callee: raw.valid_callee.unwrap_or(valid),
        owned: raw.owned.unwrap_or(def.owned),
        same_as_callee: raw.same_as_callee.unwrap_or(def.same_as_callee),
        from_pai_mismatch: raw.from_pai_mismatch.unwrap_or(def.from_pai_mismatch),
        neighbour_digits,
    }
}

fn validate_quota(raw: &RawQuota, section: &str, d: &mut Diagnostics<'_>) -> QuotaLimits {
    let cap = |v: &Option<Spanned<i64>>, key: &str, d: &mut Diagnostics<'_>| {
        v.as_ref().and_then(|v| count(v, &format!("{section}.{key}"), d))
    };
    let rate = |v: &Option<Spanned<i64>>, key: &str, d: &mut Diagnostics<'_>| {
        let n = cap(v, key, d)?;
        let r = u32::try_from(n).ok().and_then(NonZeroU32::new);
        if let (None, Some(v)) = (r, v) {
            d.error(v.span(), format!("{section}.{key} is too large"));
        }
        r
    };
    QuotaLimits {
        per_second: rate(&raw.per_second, "per_second", d),
        burst: rate(&raw.burst, "burst", d),
        per_minute: rate(&raw.per_minute, "per_minute", d),
        per_hour: cap(&raw.per_hour, "per_hour", d),
        per_day: cap(&raw.per_day, "per_day", d),
        per_caller_id_per_day: cap(&raw.per_caller_id_per_day, "per_caller_id_per_day", d),
        per_callee_per_day: cap(&raw.per_callee_per_day, "per_callee_per_day", d),
        per_callee_per_week: cap(&raw.per_callee_per_week, "per_callee_per_week", d),
    }
}

fn time_of_day(t: &Spanned<String>, key: &str, d: &mut Diagnostics<'_>) -> Option<NaiveTime> {
    let s = t.get_ref().trim();
    let parsed = NaiveTime::parse_from_str(s, "%H:%M").or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"));
    if parsed.is_err() {
        d.error(t.span(), format!("screening.hours.{key} `{s}`: expected HH:MM"));
    }
    parsed.ok()
}

fn validate_hours(raw: &RawHours, d: &mut Diagnostics<'_>) -> Option<Hours> {
    let at_section = d.text.find("[screening.hours]").unwrap_or(0);
    let need = |v: &Option<Spanned<String>>, key: &str, d: &mut Diagnostics<'_>| {
        if v.is_none() {
            d.error(at_section..at_section, format!("[screening.hours] needs `{key}`"));
        }
    };
    need(&raw.start, "start", d);
    need(&raw.end, "end", d);
    need(&raw.default_tz, "default_tz", d);
    let start = raw.start.as_ref().and_then(|t| time_of_day(t, "start", d));
    let end = raw.end.as_ref().and_then(|t| time_of_day(t, "end", d));
    let default_tz = raw.default_tz.as_ref().map(|z| zone(z, d));
    if let (Some(s), Some(e), Some(span)) = (start, end, raw.end.as_ref().map(Spanned::span))
        && s == e
    {
        d.error(span, "screening.hours: start and end are equal (an empty or a full-day window)");
    }
    let mut zones = PrefixMap::default();
    for z in &raw.zone {
        let tz = zone(&z.tz, d);
        match parse_prefix(z.prefix.get_ref()) {
            Some(p) => {
                if zones.insert(p, tz).is_some() {
                    d.error(z.prefix.span(), format!("hours zone prefix `{}` is listed twice", z.prefix.get_ref()));
                }
            }
            None => d.error(z.prefix.span(), format!("bad number prefix `{}`: expected +DIGITS", z.prefix.get_ref())),
        }
    }
    Some(Hours { start: start?, end: end?, default_tz: default_tz?, zones })
}

fn validate_responses(raw: &RawResponses, d: &mut Diagnostics<'_>) -> Responses {
    let mut out = Responses::default();
    for (name, r) in &raw.0 {
        let key = name.as_str();
        let rule = Rule::from_name(key);
        let dnc_name = key.strip_prefix("dnc_").is_some_and(valid_id);
        // The answer to a callee on an account's complaints list ([complaints]).
        let complaints = key == crate::screen::complaints::lists::LIST_NAME;
        if rule.is_none() && !dnc_name && !complaints {
            let known: Vec<&str> = Rule::ALL.iter().map(|r| r.name()).collect();
            d.error(
                r.span(),
                format!(
                    "unknown rule `{key}` in [responses]: expected one of {}, complaints, or dnc_<name> for a DNC list",
                    known.join(", ")
                ),
            );
            continue;
        }
        if let Some(resp) = validate_response(key, rule, r.get_ref(), r.span(), d) {
            out.set(key, resp);
        }
    }
    out
}

fn validate_response(
    key: &str,
    rule: Option<Rule>,
    r: &RawResponse,
    span: Range<usize>,
    d: &mut Diagnostics<'_>,
) -> Option<Response> {
    let def = default_for(rule.unwrap_or(Rule::Dnc));
    let q850 = r.q850.unwrap_or(false);
    let code = match &r.code {
        Some(c) => match u16::try_from(*c.get_ref()) {
            Ok(429) => {
                d.error(
                    c.span(),
                    format!("responses.{key}.code 429 means Provide Referrer Identity in SIP, not rate limiting"),
                );
                return None;
            }
            Ok(503) => {
                d.error(
                    c.span(),
                    format!("responses.{key}.code 503 makes upstreams fail over to another route; use 403 or 480"),
                );
                return None;
            }
            Ok(n) if (400..=699).contains(&n) => n,
            _ => {
                d.error(c.span(), format!("responses.{key}.code must be a 4xx, 5xx or 6xx final response"));
                return None;
            }
        },
        None if q850 => 603,
        None if r.call_info.is_some() => 608,
        None => def.code,
    };
    let phrase = match &r.reason {
        Some(p) if p.get_ref().trim().is_empty() || p.get_ref().contains(['\r', '\n']) => {
            d.error(p.span(), format!("responses.{key}.reason: one line of text expected"));
            return None;
        }
        Some(p) => p.get_ref().trim().to_string(),
        None if code == 603 && q850 => "Network Blocked".to_string(),
        None => match standard_phrase(code) {
            Some(p) => p.to_string(),
            None => {
                d.error(span, format!("responses.{key}: give a `reason` phrase for code {code}"));
                return None;
            }
        },
    };
    let text = match &r.text {
        Some(t) if t.get_ref().contains(['"', '\\', '\r', '\n']) => {
            d.error(t.span(), format!("responses.{key}.text: no quotes, backslashes or line breaks"));
            return None;
        }
        Some(t) => t.get_ref().trim().to_string(),
        None => default_text(rule),
    };
    let call_info = match &r.call_info {
        Some(u) if code != 608 => {
            d.error(u.span(), format!("responses.{key}.call_info (jwscard) goes with code 608, not {code}"));
            return None;
        }
        Some(u) if !u.get_ref().starts_with("https://") || u.get_ref().contains(['<', '>', ' ', '"']) => {
            d.error(u.span(), format!("responses.{key}.call_info `{}`: expected an https:// URL", u.get_ref()));
            return None;
        }
        other => other.as_ref().map(|u| u.get_ref().as_str()),
    };
    let form = if q850 { ReasonForm::Q850 } else { ReasonForm::Sip };
    Some(Response::new(code, &phrase, &text, form, call_info))
}

fn default_text(rule: Option<Rule>) -> String {
    crate::screen::responses::default_code_text(rule.unwrap_or(Rule::Dnc)).1.to_string()
}

/// An owned number or a prefix block (`+1212555*`).
enum Owned {
    Number(u64),
    Block(u64),
}

impl Owned {
    fn add_to(self, o: &mut OwnedNumbers) {
        match self {
            Owned::Number(n) => {
                o.exact.insert(n);
            }
            Owned::Block(p) => {
                o.blocks.insert(p, ());
            }
        }
    }
}

/// `[screening] min_owned_prefix_digits` when absent.
pub const DEFAULT_MIN_OWNED_PREFIX_DIGITS: i64 = 6;

/// An owned number, or a block of at least `min_block` digits after the country code (a
/// shorter one, `+1*`, would let an account present any number of a whole country).
fn parse_owned(s: &str, plan: Option<&NumberPlan>, min_block: u32) -> Result<Owned, String> {
    let s = s.trim();
    match s.strip_suffix('*') {
        Some(p) => {
            let block = parse_prefix(p).ok_or_else(|| format!("bad number block `{s}`: expected +DIGITS*"))?;
            let national = number::digit_count(block).saturating_sub(number::country_code_len(block).unwrap_or(0));
            if national < min_block {
                return Err(format!(
                    "number block `{s}` has {national} digits after the country code; \
                     screening.min_owned_prefix_digits = {min_block} is the least (a shorter block is a whole region)"
                ));
            }
            Ok(Owned::Block(block))
        }
        None => number::parse(s, plan).map(Owned::Number).ok_or_else(|| format!("bad number `{s}`")),
    }
}

/// Most CSV errors reported before giving up on the file.
const MAX_CSV_ERRORS: usize = 20;

#[allow(clippy::too_many_arguments)]
fn load_owned_csv(
    file: &Spanned<String>,
    plan: Option<&NumberPlan>,
    min_block: u32,
    ids: &mut HashMap<Arc<str>, usize>,
    accounts: &mut Vec<AccountConfig>,
    default_quota: QuotaLimits,
    mode: Mode,
    d: &mut Diagnostics<'_>,
) {
    let path = d.resolve(file.get_ref());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            d.error(file.span(), format!("screening.caller_id_numbers: cannot read {}: {e}", path.display()));
            return;
        }
    };
    let mut errors = 0;
    let mut error = |d: &mut Diagnostics<'_>, path: &Path, line: usize, msg: String| {
        errors += 1;
        if errors <= MAX_CSV_ERRORS {
            d.error_in(path, line, msg);
        }
    };
    for (i, row) in text.lines().enumerate() {
        let line = i + 1;
        let row = row.trim();
        if row.is_empty() || row.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(|f| f.trim().trim_matches('"')).collect();
        let [account, num] = fields.as_slice() else {
            error(
                d,
                &path,
                line,
                format!("row {line} malformed: expected `account,number`, got {} fields", fields.len()),
            );
            continue;
        };
        if line == 1 && account.eq_ignore_ascii_case("account") {
            continue; // header row
        }
        if !valid_id(account) {
            error(d, &path, line, format!("row {line} malformed: bad account id `{account}`"));
            continue;
        }
        let owned = match parse_owned(num, plan, min_block) {
            Ok(o) => o,
            Err(e) => {
                error(d, &path, line, format!("row {line} malformed: {e}"));
                continue;
            }
        };
        let idx = match ids.get(*account) {
            Some(&i) => i,
            None => {
                let id: Arc<str> = (*account).into();
                ids.insert(id.clone(), accounts.len());
                accounts.push(AccountConfig {
                    id,
                    sources: Vec::new(),
                    owned: OwnedNumbers::default(),
                    quota: default_quota,
                    mode,
                    category: None,
                    min_attestation: None,
                    behaviour: None,
                });
                accounts.len() - 1
            }
        };
        if let Some(a) = accounts.get_mut(idx) {
            owned.add_to(&mut a.owned);
        }
    }
    if errors > MAX_CSV_ERRORS {
        d.error_in(&path, 0, format!("{} more malformed rows not shown", errors - MAX_CSV_ERRORS));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::{Path, PathBuf};

    fn dir(name: &str, csv: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sipguard-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("owned.csv"), csv).unwrap();
        dir
    }

    /// Errors of a config as `FILE:LINE: msg` with FILE reduced to its name.
    fn errs(name: &str, text: &str, csv: &str) -> Vec<String> {
        let dir = dir(name, csv);
        match Config::parse(&dir.join("t.toml"), text) {
            Ok(_) => vec![],
            Err(e) => {
                e.0.iter()
                    .map(|d| {
                        let file = Path::new(&d.file).file_name().unwrap().to_string_lossy().to_string();
                        format!("{file}:{}: {}", d.line, d.msg)
                    })
                    .collect()
            }
        }
    }

    fn has(errs: &[String], prefix: &str) -> bool {
        errs.iter().any(|e| e.starts_with(prefix))
    }

    #[test]
    fn a_full_config_is_valid() {
        let text = r#"
[screening]
mode = "enforce"
account_header = "X-Account"
trusted_sources = ["10.0.0.0/8", "192.0.2.1"]
unknown_account = "reject"
default_country = "US"
caller_id_numbers = "owned.csv"
trust_pai = true
quota_tz = "America/New_York"
max_tracked_numbers = 100000

[screening.checks]
valid = true
owned = true
same_as_callee = true
from_pai_mismatch = false
neighbour_digits = 7

[screening.quota]
per_second = 5
burst = 10
per_minute = 100
per_hour = 1000
per_day = 5000
per_caller_id_per_day = 30
per_callee_per_day = 1
per_callee_per_week = 3

[screening.hours]
start = "08:00"
end = "21:00"
default_tz = "America/Chicago"
[[screening.hours.zone]]
prefix = "+1212"
tz = "America/New_York"

[responses.hours]
code = 480
text = "Outside calling hours"

[responses.dnc_internal]
code = 603
q850 = true

[[account]]
id = "acme"
sources = ["192.0.2.0/24"]
caller_ids = ["+12125550100", "+1646555*", "2015550100"]
quota = { per_day = 500 }
mode = "report"
category = "finance"
"#;
        let e = errs("full", text, "acme,+12125550101\nother,+13125550100\n");
        assert!(e.is_empty(), "{e:?}");
        let cfg = Config::parse(&dir("full", "acme,+12125550101\nother,+13125550100\n").join("t.toml"), text).unwrap();
        let s = cfg.screening.unwrap();
        assert_eq!((s.checks.valid, s.checks.valid_callee), (true, true), "valid_callee follows valid");
        assert_eq!(s.accounts.len(), 2, "acme and `other` from owned.csv");
        let acme = &s.accounts[0];
        assert_eq!(acme.quota.per_day, Some(500));
        assert_eq!(acme.quota.per_hour, Some(1000), "defaults fill what the account leaves out");
        assert_eq!(acme.owned.len(), 4);
        assert!(acme.owned.contains(16465550000) && acme.owned.contains(12015550100));
        assert_eq!(s.accounts[1].quota.per_day, Some(5000));
    }

    #[test]
    fn bad_values_are_reported_at_their_lines() {
        let text = r#"[screening]
trusted_sources = ["10.0.0.0/33"]
quota_tz = "Mars/Olympus"
account_header = "X-Account"

[screening.hours]
start = "8am"
end = "21:00"
default_tz = "America/New_York"

[responses.quotas]
code = 403

[responses.quota]
code = 503

[[account]]
id = "acme"
sources = ["192.0.2.0/24", "banana"]
caller_ids = ["+1212555010x"]
"#;
        let e = errs("bad", text, "");
        assert!(has(&e, "t.toml:2: bad CIDR `10.0.0.0/33`"), "{e:?}");
        assert!(has(&e, "t.toml:3: bad time zone `Mars/Olympus`"), "{e:?}");
        assert!(has(&e, "t.toml:7: screening.hours.start `8am`"), "{e:?}");
        assert!(has(&e, "t.toml:11: unknown rule `quotas`"), "{e:?}");
        assert!(has(&e, "t.toml:15: responses.quota.code 503"), "{e:?}");
        assert!(has(&e, "t.toml:19: bad CIDR `banana`"), "{e:?}");
        assert!(has(&e, "t.toml:20: account `acme` caller_ids: bad number `+1212555010x`"), "{e:?}");
    }

    #[test]
    fn csv_rows_are_reported_with_their_lines() {
        let text = "[screening]\ncaller_id_numbers = \"owned.csv\"\n";
        let csv = "account,number\nacme,+12125550100\n\nacme\nacme,notanumber\nac me,+12125550100\nacme,+1212555*\nacme,+1*\n";
        let e = errs("csv", text, csv);
        assert_eq!(
            e,
            vec![
                "owned.csv:4: row 4 malformed: expected `account,number`, got 1 fields".to_string(),
                "owned.csv:5: row 5 malformed: bad number `notanumber`".to_string(),
                "owned.csv:6: row 6 malformed: bad account id `ac me`".to_string(),
                "owned.csv:8: row 8 malformed: number block `+1*` has 0 digits after the country code; \
                 screening.min_owned_prefix_digits = 6 is the least (a shorter block is a whole region)"
                    .to_string(),
            ]
        );
        let e = errs("csv-missing", "[screening]\ncaller_id_numbers = \"nope.csv\"\n", "");
        assert!(has(&e, "t.toml:2: screening.caller_id_numbers: cannot read"), "{e:?}");
    }

    #[test]
    fn other_mistakes() {
        let e = errs("hdr", "[screening]\naccount_header = \"X-Account\"\nunknown_account = \"forward\"\n", "");
        assert!(has(&e, "t.toml:2: screening.account_header is only trusted from `trusted_sources`"), "{e:?}");
        let e = errs("none", "[screening]\n", "");
        assert!(has(&e, "t.toml:1: [screening] has no accounts"), "{e:?}");
        let text = "[screening]\nunknown_account = \"forward\"\n[screening.quota]\nper_day = 0\n[responses.hours]\ncode = 429\n[responses.dnc]\ncode = 480\ncall_info = \"https://x\"\n[[account]]\nid = \"a\"\nmode = \"loud\"\n[[account]]\nid = \"a\"\n";
        let e = errs("misc", text, "");
        assert!(has(&e, "t.toml:4: screening.quota.per_day must be at least 1"), "{e:?}");
        assert!(has(&e, "t.toml:6: responses.hours.code 429"), "{e:?}");
        assert!(has(&e, "t.toml:9: responses.dnc.call_info (jwscard) goes with code 608"), "{e:?}");
        assert!(has(&e, "t.toml:12: mode `loud`"), "{e:?}");
        assert!(has(&e, "t.toml:14: account `a` is defined twice"), "{e:?}");
        let e = errs("hours", "[screening]\nunknown_account = \"forward\"\n[screening.hours]\nstart = \"08:00\"\n", "");
        assert!(has(&e, "t.toml:3: [screening.hours] needs `end`"), "{e:?}");
    }
}
