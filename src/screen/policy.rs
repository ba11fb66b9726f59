//! The screening policy: account -> caller ID (valid, owned, spoofing) -> calling hours ->
//! DNC -> quota. Quota comes last so that it is only consumed by calls every other rule
//! passed. The policy is swapped whole on reload; counters and pacing state live in `Arc`s
//! that the new policy takes over, so a reload never resets a quota.
use super::account::AccountTable;
use super::caller_id::{self, Checks, OwnedNumbers};
use super::dnc::Dnc;
use super::hours::Hours;
use super::quota::{AccountCounters, Pacing, QuotaLimits, Usage, Windows};
use super::responses::{Response, Responses};
use super::stir::{self, OnUnavailable, Outcome, StirConfig, StirMode, StirReport};
use super::{Call, Charge, Decision, Lookup, Rule, Screen, Step, StirState, Verdict};
use crate::config::screening::{Mode, ScreeningConfig, UnknownAccount};
use crate::screen::number::NumberPlan;
use arc_swap::ArcSwap;
use chrono_tz::Tz;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

struct AccountPolicy {
    id: Arc<str>,
    mode: Mode,
    category: Option<Arc<str>>,
    owned: OwnedNumbers,
    limits: QuotaLimits,
    pacing: Arc<Pacing>,
    counters: Arc<AccountCounters>,
    min_attestation: Option<stir::Attestation>,
}

struct Policy {
    mode: Mode,
    table: AccountTable,
    accounts: Vec<AccountPolicy>,
    unknown_account: UnknownAccount,
    plan: Option<NumberPlan>,
    trust_pai: bool,
    checks: Checks,
    quota_tz: Tz,
    max_tracked: usize,
    hours: Option<Hours>,
    responses: Responses,
    /// `[stir]` with a mode other than off: without it no STIR work at all, not even a
    /// look at its config.
    stir_on: bool,
}

impl Policy {
    /// Build from config, taking over counters and (unchanged) pacing of `old` accounts.
    fn build(cfg: ScreeningConfig, old: Option<&Policy>) -> Policy {
        let sources: Vec<(Arc<str>, &[ipnet::IpNet])> =
            cfg.accounts.iter().map(|a| (a.id.clone(), a.sources.as_slice())).collect();
        let table = AccountTable::new(cfg.account_header.clone(), cfg.trusted_sources.clone(), &sources);
        let accounts = cfg
            .accounts
            .into_iter()
            .map(|a| {
                let prev = old.and_then(|o| o.table.by_id(&a.id).and_then(|i| o.accounts.get(i)));
                let counters = prev.map_or_else(Default::default, |p| p.counters.clone());
                let pacing = match prev {
                    Some(p) if p.pacing.fits(&a.quota) => p.pacing.clone(),
                    _ => Arc::new(Pacing::new(&a.quota)),
                };
                AccountPolicy {
                    id: a.id,
                    mode: a.mode,
                    category: a.category,
                    owned: a.owned,
                    limits: a.quota,
                    pacing,
                    counters,
                    min_attestation: a.min_attestation,
                }
            })
            .collect();
        Policy {
            mode: cfg.mode,
            table,
            accounts,
            unknown_account: cfg.unknown_account,
            plan: cfg.plan,
            trust_pai: cfg.trust_pai,
            checks: cfg.checks,
            quota_tz: cfg.quota_tz,
            max_tracked: cfg.max_tracked_numbers,
            stir_on: cfg.stir.as_ref().is_some_and(|s| s.mode != StirMode::Off),
            hours: cfg.hours,
            responses: cfg.responses,
        }
    }
}

/// Counters and remaining quota of one account (admin API `/accounts/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountStatus {
    pub id: String,
    pub mode: Mode,
    pub category: Option<String>,
    #[serde(flatten)]
    pub usage: Usage,
    pub per_hour: Option<u64>,
    pub per_day: Option<u64>,
    pub remaining_this_hour: Option<u64>,
    pub remaining_today: Option<u64>,
    pub owned_numbers: usize,
}

/// The screening engine the proxy calls for every initial INVITE.
pub struct Screener {
    policy: ArcSwap<Policy>,
    dnc: Arc<ArcSwap<Dnc>>,
    stir: StirState,
    /// Serialises reloads so two of them cannot both take over the same old counters.
    reload_lock: Mutex<()>,
}

impl Screener {
    pub fn new(cfg: ScreeningConfig, dnc: Arc<ArcSwap<Dnc>>) -> Screener {
        let stir = StirState {
            config: arc_swap::ArcSwapOption::new(cfg.stir.clone().map(Arc::new)),
            certs: Default::default(),
        };
        Screener { policy: ArcSwap::from_pointee(Policy::build(cfg, None)), dnc, stir, reload_lock: Mutex::new(()) }
    }

    /// Swap in a new policy; counters of accounts that still exist carry over, and cached
    /// certificate chains are validated again against the new trust anchors and CRL.
    pub fn reload(&self, cfg: ScreeningConfig, now: SystemTime) {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let stir = cfg.stir.clone().map(Arc::new);
        if let Some(s) = &stir {
            self.stir.certs.revalidate(&s.trust, now);
        }
        self.stir.config.store(stir);
        let old = self.policy.load_full();
        self.policy.store(Arc::new(Policy::build(cfg, Some(&old))));
    }

    pub fn account_snapshot(&self, id: &str, now: SystemTime) -> Option<AccountStatus> {
        let p = self.policy.load();
        let a = p.accounts.get(p.table.by_id(id)?)?;
        let usage = a.counters.usage(&Windows::at(p.quota_tz, now));
        Some(AccountStatus {
            id: a.id.to_string(),
            mode: a.mode,
            category: a.category.as_deref().map(str::to_string),
            usage,
            per_hour: a.limits.per_hour,
            per_day: a.limits.per_day,
            remaining_this_hour: a.limits.per_hour.map(|l| l.saturating_sub(usage.calls_this_hour)),
            remaining_today: a.limits.per_day.map(|l| l.saturating_sub(usage.calls_today)),
            owned_numbers: a.owned.len(),
        })
    }
}

/// Record that `rule` fired: a reject in enforce mode, a forward marked `would_reject` in
/// report mode.
fn fire(mut d: Decision, mode: Mode, rule: Rule, response: &Response, retry_after: Option<u32>) -> Decision {
    d.rule = Some(rule);
    match mode {
        Mode::Enforce => d.verdict = response.reject(retry_after),
        Mode::Report => {
            d.would_reject = true;
            d.verdict = Verdict::shared_forward();
        }
    }
    d
}

impl Screener {
    fn run(&self, call: &Call, now: SystemTime, wait: bool) -> Step {
        let p = self.policy.load();
        let mut d = Decision::pass();
        let plan = p.plan.as_ref();
        d.callee = caller_id::callee_number(call, plan);
        let presented = caller_id::presented(call, plan, p.trust_pai);
        if let Ok(pr) = &presented {
            d.caller = Some(pr.caller);
        }
        let Some(acct) = p.table.identify(call).and_then(|i| p.accounts.get(i)) else {
            return match p.unknown_account {
                UnknownAccount::Forward if p.stir_on => match self.verify(&p, d, call, None, p.mode, now, wait) {
                    Ok(d) => Step::Done(tag(d)),
                    Err(need) => need,
                },
                UnknownAccount::Forward => Step::Done(d),
                UnknownAccount::Reject => {
                    Step::Done(fire(d, p.mode, Rule::UnknownAccount, p.responses.for_rule(Rule::UnknownAccount), None))
                }
            };
        };
        d.account = Some(acct.id.clone());
        let mode = acct.mode;
        // An unreadable caller ID or callee is a screening error: caller_id_invalid.
        let (pr, callee) = match (presented, d.callee) {
            (Ok(pr), Some(callee)) => (pr, callee),
            _ => {
                return Step::Done(fire(
                    d,
                    mode,
                    Rule::CallerIdInvalid,
                    p.responses.for_rule(Rule::CallerIdInvalid),
                    None,
                ));
            }
        };
        if let Err(rule) = caller_id::check(&pr, callee, &acct.owned, &p.checks) {
            return Step::Done(fire(d, mode, rule, p.responses.for_rule(rule), None));
        }
        // Before the quota, so that a call waiting for its certificate has taken nothing.
        if p.stir_on {
            d = match self.verify(&p, d, call, acct.min_attestation, mode, now, wait) {
                Ok(d) if d.rule.is_some() && !d.would_reject => return Step::Done(d),
                Ok(d) => d,
                Err(need) => return need,
            };
        }
        if let Some(hours) = &p.hours
            && let Err(wait) = hours.check(callee, now)
        {
            return Step::Done(tag(fire(d, mode, Rule::Hours, p.responses.for_rule(Rule::Hours), Some(wait))));
        }
        if let Some(hit) = self.dnc.load().check(callee, &acct.id, acct.category.as_deref()) {
            let response = p.responses.named_or_dnc(&hit.response);
            d.list = Some(hit.list);
            return Step::Done(tag(fire(d, mode, Rule::Dnc, response, None)));
        }
        let windows = Windows::at(p.quota_tz, now);
        let within = acct.counters.check_and_count(
            &acct.limits,
            &acct.pacing,
            &windows,
            pr.caller,
            callee,
            now,
            p.max_tracked,
            &mut d.counters,
        );
        if !within {
            return Step::Done(tag(fire(d, mode, Rule::Quota, p.responses.for_rule(Rule::Quota), None)));
        }
        d.charge = Some(Charge { account: acct.id.clone(), windows, caller: pr.caller, callee });
        Step::Done(tag(d))
    }

    /// The STIR step: verify, record the report, and fire the identity rule it calls for.
    /// `Err` carries the lookup to make first (a `Step::Need`, so its size is the Step's).
    #[allow(clippy::too_many_arguments, clippy::result_large_err)]
    fn verify(
        &self,
        p: &Policy,
        mut d: Decision,
        call: &Call,
        min_attestation: Option<stir::Attestation>,
        mode: Mode,
        now: SystemTime,
        wait: bool,
    ) -> Result<Decision, Step> {
        let cfg = self.stir.config.load();
        let Some(cfg) = cfg.as_deref().filter(|c| c.mode != StirMode::Off) else {
            return Ok(d);
        };
        let report = stir::verify(cfg, &self.stir.certs, call.identity.as_deref(), d.caller, d.callee, now, wait)
            .map_err(|need| Step::Need(Lookup::Certificate { url: need.0 }))?;
        let rule = stir_rule(&report, cfg, min_attestation);
        d.stir = Some(Box::new(report));
        Ok(match rule {
            Some(rule) => fire(d, mode, rule, p.responses.for_rule(rule), None),
            None => d,
        })
    }
}

/// The identity rule a verification report fires, if any.
fn stir_rule(r: &StirReport, cfg: &StirConfig, min_attestation: Option<stir::Attestation>) -> Option<Rule> {
    match r.outcome {
        Outcome::Passed => match (r.attestation, min_attestation) {
            (Some(got), Some(min)) if got < min => Some(Rule::Attestation),
            _ => None,
        },
        Outcome::Missing => (cfg.mode == StirMode::Require).then_some(Rule::IdentityMissing),
        Outcome::Invalid => Some(Rule::IdentityInvalid),
        Outcome::Stale => Some(Rule::IdentityStale),
        Outcome::Untrusted => Some(Rule::IdentityUntrusted),
        Outcome::Unavailable => (cfg.on_unavailable == OnUnavailable::Reject).then_some(Rule::IdentityUnavailable),
    }
}

/// A forwarded call carries its verstat when it was verified.
fn tag(mut d: Decision) -> Decision {
    if let (Some(r), Verdict::Forward { .. }) = (&d.stir, &*d.verdict) {
        d.verdict = Verdict::shared_forward_verstat(r.outcome.verstat());
    }
    d
}

impl Screen for Screener {
    fn account_header(&self) -> Option<Arc<str>> {
        self.policy.load().table.header().cloned()
    }

    fn screen(&self, call: &Call, now: SystemTime) -> Decision {
        // Without waiting, verification never asks for a lookup.
        match self.run(call, now, false) {
            Step::Done(d) => d,
            Step::Need(_) => Decision::pass(),
        }
    }

    fn step(&self, call: &Call, now: SystemTime) -> Step {
        self.run(call, now, true)
    }

    fn stir(&self) -> Option<&StirState> {
        Some(&self.stir)
    }

    fn release(&self, decision: &Decision) {
        let Some(c) = &decision.charge else { return };
        let p = self.policy.load();
        if let Some(a) = p.table.by_id(&c.account).and_then(|i| p.accounts.get(i)) {
            a.counters.uncount(&a.limits, &c.windows, c.caller, c.callee);
        }
    }
}

#[cfg(test)]
mod tests;
