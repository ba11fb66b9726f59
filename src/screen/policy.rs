//! The screening policy: account -> caller ID (valid, owned, spoofing) -> calling hours ->
//! DNC -> quota. Quota comes last so that it is only consumed by calls every other rule
//! passed. The policy is swapped whole on reload; counters and pacing state live in `Arc`s
//! that the new policy takes over, so a reload never resets a quota.
use super::account::AccountTable;
use super::behaviour::{self, AccountBehaviour, Behaviour, CallRef, Figures, Trip};
use super::caller_id::{self, Checks, OwnedNumbers};
use super::complaints::lists::{self as complaint_lists, Lists as ComplaintLists, Scope};
use super::dnc::Dnc;
use super::hours::Hours;
use super::quota::shared::{self, OnFailure, Reservation, SharedCounters, StoreFailure, Tally};
use super::quota::{AccountCounters, CountersSnapshot, Pacing, QuotaLimits, Usage, Windows};
use super::responses::{Response, Responses};
use super::stir::{self, OnUnavailable, Outcome, StirConfig, StirMode, StirReport};
use super::suspension::{Suspension, Suspensions, rfc3339};
use super::{
    Call, Charge, CounterReading, Counting, Decision, Lookup, RawFacts, Rule, Screen, Step, StirState, Verdict,
};
use crate::config::screening::{Mode, ScreeningConfig, UnknownAccount};
use crate::screen::number::NumberPlan;
use arc_swap::ArcSwap;
use chrono_tz::Tz;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Call behaviour state (figures, live calls), carried over reloads; None: not tracked.
    behaviour: Option<Arc<AccountBehaviour>>,
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
    /// `[cluster] backend = "redis"`: window counters live in the cluster store.
    shared: Option<SharedCounters>,
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
                let behaviour = a.behaviour.map(|limits| match prev.and_then(|p| p.behaviour.clone()) {
                    Some(b) => {
                        b.set_limits(limits, cfg.max_tracked_numbers);
                        b
                    }
                    None => Arc::new(AccountBehaviour::new(limits, cfg.max_tracked_numbers)),
                });
                AccountPolicy {
                    behaviour,
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
            shared: cfg.cluster,
            hours: cfg.hours,
            responses: cfg.responses,
        }
    }
}

/// Counters and remaining quota of one account (admin API `/accounts/<id>`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
    /// Call behaviour figures over the account's window, when `[screening.behaviour]` (or
    /// the account's own `behaviour`) is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<Figures>,
    /// Where the counts come from: "local" (this node), "cluster" (Redis, with this node's
    /// counts not yet written back), or "local_only" (Redis configured but unreachable).
    pub counters: &'static str,
}

impl AccountStatus {
    /// Add the cluster's counts to this node's and say so.
    pub fn add_cluster(&mut self, u: &Usage) {
        let l = &mut self.usage;
        l.calls_this_hour += u.calls_this_hour;
        l.calls_today += u.calls_today;
        // Distinct numbers: the cluster's, at least this node's (they overlap).
        l.caller_ids_today = l.caller_ids_today.max(u.caller_ids_today);
        l.callees_today = l.callees_today.max(u.callees_today);
        l.callees_this_week = l.callees_this_week.max(u.callees_this_week);
        self.remaining_this_hour = self.per_hour.map(|c| c.saturating_sub(self.usage.calls_this_hour));
        self.remaining_today = self.per_day.map(|c| c.saturating_sub(self.usage.calls_today));
        self.counters = "cluster";
    }
}

/// The screening engine the proxy calls for every initial INVITE.
pub struct Screener {
    policy: ArcSwap<Policy>,
    dnc: Arc<ArcSwap<Dnc>>,
    stir: StirState,
    /// Serialises reloads so two of them cannot both take over the same old counters.
    reload_lock: Mutex<()>,
    /// The live calls of every account, kept across reloads.
    behaviour: Behaviour,
    /// Some account's behaviour is tracked: the proxy hands in responses and BYEs.
    tracking: AtomicBool,
    /// Caller IDs and accounts barred from calling; outlives reloads (the shell's store).
    suspensions: Arc<Suspensions>,
    /// Report mode: would-be behaviour suspensions already logged.
    would_suspend: behaviour::suspend::WouldBe,
    /// The `complaints` lists (`[complaints] callee_to_dnc`); outlive reloads likewise.
    complaints: Arc<ComplaintLists>,
}

impl Screener {
    pub fn new(cfg: ScreeningConfig, dnc: Arc<ArcSwap<Dnc>>) -> Screener {
        let stir = StirState {
            config: arc_swap::ArcSwapOption::new(cfg.stir.clone().map(Arc::new)),
            certs: Default::default(),
        };
        let cap = cfg.behaviour.as_ref().map_or(behaviour::DEFAULT_MAX_TRACKED_CALLS, |b| b.max_tracked_calls);
        let tracking = AtomicBool::new(cfg.behaviour.is_some());
        Screener {
            policy: ArcSwap::from_pointee(Policy::build(cfg, None)),
            dnc,
            stir,
            reload_lock: Mutex::new(()),
            behaviour: Behaviour::new(cap),
            tracking,
            suspensions: Arc::default(),
            would_suspend: Default::default(),
            complaints: Arc::default(),
        }
    }

    /// The live-call tracker (its counts, for the metrics).
    pub fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }

    /// Each caller ID's behaviour figures of an account, most attempts first; None when the
    /// account is unknown or its behaviour is not tracked.
    pub fn caller_figures(&self, id: &str, now: SystemTime, limit: usize) -> Option<Vec<(u64, Figures)>> {
        let p = self.policy.load();
        let a = p.accounts.get(p.table.by_id(id)?)?;
        self.behaviour.expire(now);
        Some(a.behaviour.as_ref()?.caller_figures(now, limit))
    }

    /// Every tracked account's figures (for the metrics).
    pub fn all_figures(&self, now: SystemTime) -> Vec<(Arc<str>, Figures)> {
        let p = self.policy.load();
        self.behaviour.expire(now);
        p.accounts.iter().filter_map(|a| Some((a.id.clone(), a.behaviour.as_ref()?.figures(now)))).collect()
    }

    /// Use `store` (replayed from the journal, writing to it) for suspensions.
    pub fn with_suspensions(mut self, store: Arc<Suspensions>) -> Screener {
        self.suspensions = store;
        self
    }

    pub fn suspensions(&self) -> &Arc<Suspensions> {
        &self.suspensions
    }

    /// Use `lists` (the complaint desk's) for the `complaints` list.
    pub fn with_complaint_lists(mut self, lists: Arc<ComplaintLists>) -> Screener {
        self.complaints = lists;
        self
    }

    /// The first account (in config order) that owns caller ID `n`.
    pub fn owner_of(&self, n: u64) -> Option<Arc<str>> {
        self.policy.load().accounts.iter().find(|a| a.owned.contains(n)).map(|a| a.id.clone())
    }

    pub fn category_of(&self, id: &str) -> Option<Arc<str>> {
        let p = self.policy.load();
        p.accounts.get(p.table.by_id(id)?)?.category.clone()
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
        if let Some(b) = &cfg.behaviour {
            self.behaviour.tracker.set_cap(b.max_tracked_calls);
        }
        self.tracking.store(cfg.behaviour.is_some(), Ordering::Relaxed);
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
            behaviour: a.behaviour.as_ref().map(|b| {
                self.behaviour.expire(now);
                b.figures(now)
            }),
            counters: if p.shared.is_some() { "local_only" } else { "local" },
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
            d.fired.push((rule, response.code));
        }
    }
    d
}

/// Longest presented value kept for the decision log.
const RAW_MAX: usize = 200;

/// Note an offending value as presented.
fn raw(d: &mut Decision, f: impl FnOnce(&mut RawFacts)) {
    f(d.raw.get_or_insert_with(Default::default));
}

impl Screener {
    fn run(&self, call: &Call, now: SystemTime, wait: bool) -> Step {
        let p = self.policy.load();
        let mut d = Decision::pass();
        d.source = call.source;
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
                    if let Some(h) = call.account_header.as_deref() {
                        raw(&mut d, |r| r.account = Some(caller_id::cut(h.trim(), RAW_MAX).into()));
                    }
                    Step::Done(fire(d, p.mode, Rule::UnknownAccount, p.responses.for_rule(Rule::UnknownAccount), None))
                }
            };
        };
        d.account = Some(acct.id.clone());
        if let Some(b) = &acct.behaviour {
            // Cold by now in a busy proxy; fetched while the rules before it are checked.
            b.prefetch();
        }
        let mode = acct.mode;
        // First: a suspended account or caller ID is refused whatever else holds.
        if let Some(s) = self.suspensions.check(&acct.id, d.caller, now) {
            return Step::Done(suspended(d, mode, &p.responses, &s));
        }
        // A callee that is no number, or (checks.valid_callee) one that cannot exist, is
        // refused before anything is counted: callee_invalid.
        let callee = match d.callee {
            Some(callee) if !p.checks.valid_callee || crate::screen::number::is_valid(callee) => callee,
            _ => {
                if d.callee.is_none() {
                    let uri = caller_id::cut(&call.request_uri, RAW_MAX);
                    raw(&mut d, |r| r.callee = Some(uri.into()));
                }
                let r = Rule::CalleeInvalid;
                let d = fire(d, mode, r, p.responses.for_rule(r), None);
                let pr = presented.as_ref().ok();
                return Step::Done(self.also_fired(&p, d, acct, pr, None, now));
            }
        };
        // An unreadable caller ID: caller_id_invalid.
        let Ok(pr) = presented else {
            raw(&mut d, |r| r.caller = Some(caller_id::presented_text(call, p.trust_pai, RAW_MAX).into()));
            let r = Rule::CallerIdInvalid;
            let d = fire(d, mode, r, p.responses.for_rule(r), None);
            return Step::Done(self.also_fired(&p, d, acct, None, Some(callee), now));
        };
        if let Err(rule) = caller_id::check(&pr, callee, &acct.owned, &p.checks) {
            let d = fire(d, mode, rule, p.responses.for_rule(rule), None);
            return Step::Done(self.also_fired(&p, d, acct, Some(&pr), Some(callee), now));
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
            let d = fire(d, mode, Rule::Hours, p.responses.for_rule(Rule::Hours), Some(wait));
            return Step::Done(tag(self.also_fired(&p, d, acct, Some(&pr), Some(callee), now)));
        }
        if let Some(hit) = self.dnc.load().check(callee, &acct.id, acct.category.as_deref()) {
            let response = p.responses.named_or_dnc(&hit.response);
            d.list = Some(hit.list);
            return Step::Done(tag(fire(d, mode, Rule::Dnc, response, None)));
        }
        if let Some((scope, listed)) = self.complaints.check(callee, &acct.id, acct.category.as_deref()) {
            return Step::Done(tag(complained(d, mode, &p.responses, callee, &scope, listed)));
        }
        if let Some(b) = &acct.behaviour {
            let key = call.key.unwrap_or_else(|| {
                let caller_tag = crate::sip::addr::tag_of(call.from.as_bytes());
                self.behaviour.key(CallRef { call_id: call.call_id.as_bytes(), caller_tag })
            });
            self.behaviour.prefetch(key);
            d.tracked = Some(key);
            if let Some(trip) = b.judge(pr.caller, callee, now) {
                d = self.tripped(&p, d, acct, &trip, now);
                if d.rule.is_some() && !d.would_reject {
                    return Step::Done(tag(d));
                }
            }
        }
        let windows = Windows::at(p.quota_tz, now);
        // Without a window cap there is nothing for the store to refuse: the call is counted
        // here and written back with the rest, and never waits for (or on) the store.
        if p.shared.is_some() && acct.limits.has_window_caps() {
            // Pacing is this node's own; the window counters are the cluster's.
            if let Some(refused) = acct.pacing.refusal(&acct.limits, now) {
                d.counters.push(refused);
                return Step::Done(tag(fire(d, mode, Rule::Quota, p.responses.for_rule(Rule::Quota), None)));
            }
            let reservation = Reservation::new(acct.id.clone(), &acct.limits, windows, pr.caller, callee)
                .tracking_at_most(p.max_tracked);
            return Step::Need(Lookup::Counters(Box::new(Counting { reservation, decision: d })));
        }
        let within = acct.counters.check_and_count(
            &acct.limits,
            Some((&acct.pacing, now)),
            &windows,
            pr.caller,
            callee,
            p.max_tracked,
            &mut d.counters,
        );
        if !within {
            return Step::Done(tag(fire(d, mode, Rule::Quota, p.responses.for_rule(Rule::Quota), None)));
        }
        d.charge = Some(Charge { account: acct.id.clone(), windows, caller: pr.caller, callee, shared: None });
        Step::Done(tag(d))
    }

    /// Report mode: after the first rule fired, the other rules that would have refused the
    /// call and can be judged without counting it or waiting (caller-ID checks, calling
    /// hours, DNC), added to `fired` with their codes. Enforce mode: nothing to add.
    fn also_fired(
        &self,
        p: &Policy,
        mut d: Decision,
        acct: &AccountPolicy,
        pr: Option<&caller_id::Presented>,
        callee: Option<u64>,
        now: SystemTime,
    ) -> Decision {
        if !d.would_reject {
            return d;
        }
        let mut more: Vec<(Rule, u16)> = Vec::new();
        let code = |r: Rule| p.responses.for_rule(r).code;
        if let (Some(pr), Some(callee)) = (pr, callee) {
            more.extend(caller_id::failures(pr, callee, &acct.owned, &p.checks).into_iter().map(|r| (r, code(r))));
        }
        if let Some(callee) = callee {
            if p.hours.as_ref().is_some_and(|h| h.check(callee, now).is_err()) {
                more.push((Rule::Hours, code(Rule::Hours)));
            }
            if let Some(hit) = self.dnc.load().check(callee, &acct.id, acct.category.as_deref()) {
                more.push((Rule::Dnc, p.responses.named_or_dnc(&hit.response).code));
                d.list.get_or_insert(hit.list);
            }
        }
        for f in more {
            if !d.fired.iter().any(|(r, _)| *r == f.0) {
                d.fired.push(f);
            }
        }
        d
    }

    /// Apply a behaviour rule that tripped: `concurrent` and `sequential` refuse the call, as
    /// does `behaviour` for the distinct-callee cap; a ratio rule flags the call, or (by
    /// `action`) suspends its caller ID or account and refuses it. Report mode only logs.
    fn tripped(&self, p: &Policy, mut d: Decision, acct: &AccountPolicy, trip: &Trip, now: SystemTime) -> Decision {
        let (name, value, limit) = trip.reading();
        d.counters.push(CounterReading { name, value, limit });
        let rule = match trip {
            Trip::Concurrent { .. } => Rule::Concurrent,
            Trip::Sequential { .. } => Rule::Sequential,
            Trip::Distinct { .. } | Trip::Ratio { .. } => Rule::Behaviour,
        };
        let limits = acct.behaviour.as_ref().map_or_else(behaviour::Limits::default, |b| b.limits());
        if let (Trip::Ratio { .. }, behaviour::Action::Flag) = (trip, limits.action) {
            // Flagged: marked in the decision log, forwarded.
            d.rule = Some(Rule::Behaviour);
            d.would_reject = true;
            return d;
        }
        if let Some(s) = behaviour::suspend::decide(trip, &limits, &acct.id, d.caller, now) {
            d.detail = Some(format!("{} suspended until {}: {}", s.id, rfc3339(s.until), s.cause).into());
            self.suspend(s, acct.mode, (name, value, limit), now);
        }
        fire(d, acct.mode, rule, p.responses.for_rule(rule), None)
    }

    /// Put a behaviour suspension in force (journalled by the store) or, in report mode,
    /// only log it; either is logged once, with the figure that caused it.
    fn suspend(&self, s: Suspension, mode: Mode, (figure, value, limit): (&str, u64, u64), now: SystemTime) {
        let until = rfc3339(s.until);
        match mode {
            Mode::Enforce => {
                let (id, account, subject) = (s.id.clone(), s.account.clone(), s.subject);
                let cause = s.cause.clone();
                if self.suspensions.suspend(s) {
                    tracing::warn!(?subject, %id, %account, %until, figure, value, limit, %cause,
                        "suspended for its call behaviour");
                }
            }
            Mode::Report => {
                if self.would_suspend.first(&s, now) {
                    tracing::warn!(subject = ?s.subject, id = %s.id, account = %s.account, %until, figure, value,
                        limit, cause = %s.cause, "would be suspended for its call behaviour (report mode)");
                }
            }
        }
    }

    /// Count a call that is let through in the behaviour figures and track it; a call that
    /// lost the last `max_concurrent` slot to another since it was judged is refused (and
    /// its quota charge given back).
    fn track(&self, mut d: Decision, now: SystemTime) -> Decision {
        let Some(key) = d.tracked.take() else { return d };
        if !d.verdict.is_forward() {
            return d;
        }
        let p = self.policy.load();
        let Some(acct) = d.account.as_deref().and_then(|id| p.table.by_id(id)).and_then(|i| p.accounts.get(i)) else {
            return d;
        };
        let (Some(b), Some(caller), Some(callee)) = (&acct.behaviour, d.caller, d.callee) else { return d };
        // Counted in the cluster store already, or forwarded anyway (report mode): counted
        // here whatever the slots.
        let force = d.would_reject || d.charge.as_ref().is_some_and(|c| c.shared.is_some());
        match self.behaviour.start(b, key, (caller, callee), now, force) {
            Ok(tracked) => {
                d.tracked = tracked.then_some(key);
                d
            }
            Err(trip) => {
                if let Some(c) = d.charge.take() {
                    acct.counters.uncount(&acct.limits, &c.windows, c.caller, c.callee);
                }
                let d = self.tripped(&p, d, acct, &trip, now);
                if d.verdict.is_forward() {
                    // Report mode: forwarded, so counted.
                    let mut d = d;
                    if let Ok(tracked) = self.behaviour.start(b, key, (caller, callee), now, true) {
                        d.tracked = tracked.then_some(key);
                    }
                    return d;
                }
                tag(d)
            }
        }
    }

    /// Decide a call that waited for the cluster store, from its answer or, when there is
    /// none, by `[cluster] on_failure`.
    fn decide_counted(&self, c: Counting, answer: Result<Tally, StoreFailure>) -> Decision {
        let p = self.policy.load();
        let Counting { reservation: r, decision: mut d } = c;
        // An account removed by a reload while its call waited is now an unknown account.
        // (A count the store made for it stays: errs on the strict side.)
        let Some(acct) = p.table.by_id(&r.account).and_then(|i| p.accounts.get(i)) else {
            return match p.unknown_account {
                UnknownAccount::Forward => tag(d),
                UnknownAccount::Reject => {
                    fire(d, p.mode, Rule::UnknownAccount, p.responses.for_rule(Rule::UnknownAccount), None)
                }
            };
        };
        let quota = p.responses.for_rule(Rule::Quota);
        let w = r.windows;
        let local = |d: &mut Decision| {
            d.charge =
                Some(Charge { account: acct.id.clone(), windows: w, caller: r.caller, callee: r.callee, shared: None })
        };
        match answer {
            Ok(t) => {
                let step = u64::from(t.admitted);
                acct.counters.saw(&w, t.values[shared::HOUR] + step, t.values[shared::DAY] + step);
                r.readings(&t, &mut d.counters);
                if !t.admitted {
                    return tag(fire(d, acct.mode, Rule::Quota, quota, None));
                }
                d.charge = Some(Charge {
                    account: acct.id.clone(),
                    windows: w,
                    caller: r.caller,
                    callee: r.callee,
                    shared: Some(Box::new(r)),
                });
                tag(d)
            }
            Err(_) => match p.shared.map_or(OnFailure::Open, |s| s.on_failure) {
                OnFailure::Open => {
                    acct.counters.add(&acct.limits, &w, r.caller, r.callee, p.max_tracked);
                    d.counters.push(CounterReading { name: "cluster_unavailable", value: 0, limit: 0 });
                    local(&mut d);
                    tag(d)
                }
                OnFailure::Closed => {
                    d.counters.push(CounterReading { name: "cluster_unavailable", value: 0, limit: 0 });
                    tag(fire(d, acct.mode, Rule::Quota, quota, None))
                }
                OnFailure::Local => {
                    let (seen_hour, seen_day) = acct.counters.seen(&w);
                    let nodes = p.shared.map_or(1, |s| s.nodes);
                    let limits = shared::local_share(&acct.limits, nodes, seen_hour, seen_day);
                    // Pacing was applied before the store was asked.
                    let within = acct.counters.check_and_count(
                        &limits,
                        None,
                        &w,
                        r.caller,
                        r.callee,
                        p.max_tracked,
                        &mut d.counters,
                    );
                    if !within {
                        return tag(fire(d, acct.mode, Rule::Quota, quota, None));
                    }
                    local(&mut d);
                    tag(d)
                }
            },
        }
    }

    /// The counts this node holds for each account (its counters with the local backend;
    /// the calls counted during an outage of the cluster store otherwise). `take` empties
    /// them (to write them back to the store).
    fn counts_here(&self, now: SystemTime, take: bool) -> Vec<(Arc<str>, CountersSnapshot)> {
        let p = self.policy.load();
        let w = Windows::at(p.quota_tz, now);
        p.accounts
            .iter()
            .filter_map(|a| {
                let s = if take { a.counters.take(&w) } else { a.counters.snapshot(&w) };
                let keep = if take { s.has_counts() } else { !s.is_empty() };
                keep.then(|| (a.id.clone(), s))
            })
            .collect()
    }

    /// Add saved counts (a restart, or a write-back that failed); windows that have ended
    /// and accounts that no longer exist are left out. Returns the calls added (day counts).
    fn merge_here(&self, counts: &[(Arc<str>, CountersSnapshot)], now: SystemTime) -> u64 {
        let p = self.policy.load();
        let w = Windows::at(p.quota_tz, now);
        counts
            .iter()
            .filter_map(|(id, s)| p.table.by_id(id).and_then(|i| p.accounts.get(i)).map(|a| a.counters.merge(s, &w)))
            .sum()
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

/// The `suspended` rule: the Reason says until when; the decision log also says why.
fn suspended(mut d: Decision, mode: Mode, responses: &Responses, s: &Suspension) -> Decision {
    let until = rfc3339(s.until);
    d.detail = Some(
        format!("{} suspended by {} since {} until {until}: {}", s.id, s.source, rfc3339(s.since), s.cause).into(),
    );
    let response = responses.for_rule(Rule::Suspended);
    let mut d = fire(d, mode, Rule::Suspended, response, None);
    if !d.would_reject {
        d.verdict = response.reject_noting(&format!("until {until}"));
    }
    d
}

/// The callee is on a `complaints` list: the dnc rule, with the list's own response
/// (`[responses.complaints]`, else the dnc rule's) and which complaint put it there.
fn complained(
    mut d: Decision,
    mode: Mode,
    responses: &Responses,
    callee: u64,
    scope: &Scope,
    listed: complaint_lists::Listed,
) -> Decision {
    let whose = match scope {
        Scope::Account(a) => format!("account {a}"),
        Scope::Category(c) => format!("category {c}"),
    };
    let when = rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(listed.at));
    d.list = Some(complaint_lists::LIST_NAME.into());
    d.detail = Some(
        format!("+{callee} on the complaints list of {whose} by complaint #{} at {when}", listed.complaint).into(),
    );
    fire(d, mode, Rule::Dnc, responses.named_or_dnc(complaint_lists::LIST_NAME), None)
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
        // Without waiting, verification never asks for a lookup; the cluster store is
        // counted as out of reach.
        match self.run(call, now, false) {
            Step::Done(d) => self.track(d, now),
            Step::Need(Lookup::Counters(c)) => self.track(self.decide_counted(*c, Err(StoreFailure::Down)), now),
            Step::Need(Lookup::Certificate { .. }) => Decision::pass(),
        }
    }

    fn step(&self, call: &Call, now: SystemTime, certificates: bool) -> Step {
        match self.run(call, now, certificates) {
            Step::Done(d) => Step::Done(self.track(d, now)),
            need => need,
        }
    }

    fn counted(&self, counting: Counting, answer: Result<Tally, StoreFailure>, now: SystemTime) -> Decision {
        self.track(self.decide_counted(counting, answer), now)
    }

    fn tracks_calls(&self) -> bool {
        self.tracking.load(Ordering::Relaxed)
    }

    fn call_event(&self, event: behaviour::CallEvent, now: SystemTime) {
        self.behaviour.event(event, now)
    }

    fn prefetch_call(&self, call: behaviour::CallKey) {
        self.behaviour.prefetch(call)
    }

    fn local_counts(&self, now: SystemTime, take: bool) -> Vec<(Arc<str>, CountersSnapshot)> {
        self.counts_here(now, take)
    }

    fn merge_counts(&self, counts: &[(Arc<str>, CountersSnapshot)], now: SystemTime) -> u64 {
        self.merge_here(counts, now)
    }

    fn windows(&self, now: SystemTime) -> Option<Windows> {
        Some(Windows::at(self.policy.load().quota_tz, now))
    }

    fn stir(&self) -> Option<&StirState> {
        Some(&self.stir)
    }

    fn release(&self, decision: &Decision) -> Option<Box<Reservation>> {
        if let Some(key) = decision.tracked {
            self.behaviour.unstart(key);
        }
        let c = decision.charge.as_ref()?;
        if c.shared.is_some() {
            return c.shared.clone();
        }
        let p = self.policy.load();
        if let Some(a) = p.table.by_id(&c.account).and_then(|i| p.accounts.get(i)) {
            a.counters.uncount(&a.limits, &c.windows, c.caller, c.callee);
        }
        None
    }
}

#[cfg(test)]
mod tests;
