//! Call behaviour (`[screening.behaviour]`): figures per caller ID and per account measured
//! from the signalling the proxy relays, and the rules that judge them.
//!
//! - An attempt is counted when a screened INVITE is let through (`Behaviour::start`), and
//!   the call is tracked by its Call-ID and the caller's From tag (keyed hash).
//! - The first 2xx to it that comes back through us (its Via branch verified) answers it;
//!   retransmitted 2xx find it answered and count nothing. A final non-2xx (486, 487 after a
//!   CANCEL, 603...) ends it unanswered; 401/407/422/491 leave it ringing for the retry.
//! - A BYE that proves its dialog (our Record-Route MAC, from either end) ends an answered
//!   call: its duration is 2xx to BYE.
//! - Every tracked call expires: a ringing one after `RING_SECONDS` (its INVITE transaction
//!   has ended by then), an answered one after `max_call_seconds` without a BYE. Each entry
//!   is removed exactly once, under its shard's lock, and only the removal frees its slot,
//!   so concurrency counts can neither drift up nor go negative.
//!
//! Nothing here reads a clock: `now` comes in with every call.

pub mod suspend;
mod tracker;
pub mod window;

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;

pub use tracker::{Tracker, TrackerStats};

use crate::screen::hash::NumberMap;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use window::{STEPS, Sums, Window};

/// Seconds a call that was never answered stays tracked: Timer C (3 minutes, RFC 3261
/// §16.8) plus Timer B's 32 s for the final response to come back.
pub const RING_SECONDS: u64 = 212;

/// Default cap on calls tracked at once (all accounts).
pub const DEFAULT_MAX_TRACKED_CALLS: usize = 1_000_000;

/// Distinct callees counted per account and hour when `max_distinct_callees_per_hour` is
/// not set (the figure then reads "at least" this many).
pub const DISTINCT_FIGURE_CAP: usize = 100_000;

/// What happens when a ratio rule trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The call passes, marked in the decision log.
    Flag,
    /// The caller ID is suspended for `suspend_minutes`; the call is refused.
    SuspendCallerId,
    /// The account is suspended for `suspend_minutes`; the call is refused.
    SuspendAccount,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "flag" => Some(Action::Flag),
            "suspend_caller_id" => Some(Action::SuspendCallerId),
            "suspend_account" => Some(Action::SuspendAccount),
            _ => None,
        }
    }
}

/// One account's behaviour limits (`[screening.behaviour]` with its `behaviour = {...}`
/// overrides). A rule left out (None) is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub window_minutes: u32,
    pub min_attempts: u32,
    pub min_asr: Option<f64>,
    pub short_call_seconds: u32,
    pub max_short_call_ratio: Option<f64>,
    pub min_acd_seconds: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub max_sequential: Option<u32>,
    pub sequential_gap: u64,
    pub max_distinct_callees_per_hour: Option<u32>,
    pub max_call_seconds: u32,
    pub action: Action,
    pub suspend_minutes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            window_minutes: 360,
            min_attempts: 20,
            min_asr: None,
            short_call_seconds: 6,
            max_short_call_ratio: None,
            min_acd_seconds: None,
            max_concurrent: None,
            max_sequential: None,
            sequential_gap: 1,
            max_distinct_callees_per_hour: None,
            max_call_seconds: 14_400,
            action: Action::Flag,
            suspend_minutes: 1440,
        }
    }
}

impl Limits {
    /// Length of one window step in milliseconds (at least 1).
    fn step_ms(&self) -> u64 {
        (u64::from(self.window_minutes) * 60_000 / STEPS).max(1)
    }

    /// Rules that need the BYE to see (durations and the end of answered calls), by key.
    pub fn needs_bye(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.max_short_call_ratio.is_some() {
            v.push("max_short_call_ratio");
        }
        if self.min_acd_seconds.is_some() {
            v.push("min_acd_seconds");
        }
        if self.max_concurrent.is_some() {
            v.push("max_concurrent");
        }
        v
    }
}

/// `[screening.behaviour]`: the defaults every account starts from, and the global cap.
#[derive(Debug, Clone, PartialEq)]
pub struct BehaviourConfig {
    pub limits: Limits,
    pub max_tracked_calls: usize,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        BehaviourConfig { limits: Limits::default(), max_tracked_calls: DEFAULT_MAX_TRACKED_CALLS }
    }
}

/// Whose figures tripped a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    CallerId,
    Account,
}

/// Why a call falls foul of the behaviour rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Trip {
    /// `max_concurrent`: calls ringing or answered now.
    Concurrent { live: u32, limit: u32 },
    /// `max_sequential`: this call would make the run this long.
    Sequential { run: u32, limit: u32 },
    /// `max_distinct_callees_per_hour`.
    Distinct { seen: u32, limit: u32 },
    /// A ratio rule (`min_asr`, `max_short_call_ratio`, `min_acd_seconds`).
    Ratio { subject: Subject, figure: &'static str, value: f64, limit: f64, attempts: u64 },
}

impl Trip {
    /// The decision log's counter: name, value and limit (ratios in per mille, durations in
    /// seconds, rounded).
    pub fn reading(&self) -> (&'static str, u64, u64) {
        let permille = |x: f64| (x * 1000.0).round().max(0.0) as u64;
        match *self {
            Trip::Concurrent { live, limit } => ("concurrent", u64::from(live), u64::from(limit)),
            Trip::Sequential { run, limit } => ("sequential_run", u64::from(run), u64::from(limit)),
            Trip::Distinct { seen, limit } => ("distinct_callees_per_hour", u64::from(seen), u64::from(limit)),
            Trip::Ratio { subject, figure, value, limit, .. } => {
                let name = match (subject, figure) {
                    (Subject::CallerId, "asr") => "caller_id_asr_permille",
                    (Subject::CallerId, "short_call_ratio") => "caller_id_short_call_ratio_permille",
                    (Subject::CallerId, _) => "caller_id_acd_seconds",
                    (Subject::Account, "asr") => "account_asr_permille",
                    (Subject::Account, "short_call_ratio") => "account_short_call_ratio_permille",
                    (Subject::Account, _) => "account_acd_seconds",
                };
                if figure == "acd_seconds" {
                    (name, value.round().max(0.0) as u64, limit.round().max(0.0) as u64)
                } else {
                    (name, permille(value), permille(limit))
                }
            }
        }
    }

    /// Human text, for the suspension's cause and the logs.
    pub fn describe(&self) -> String {
        match *self {
            Trip::Concurrent { live, limit } => format!("{live} concurrent calls, limit {limit}"),
            Trip::Sequential { run, limit } => format!("sequential run of {run} callees, limit {limit}"),
            Trip::Distinct { seen, limit } => format!("{seen} distinct callees in the last hour, limit {limit}"),
            Trip::Ratio { subject, figure, value, limit, attempts } => {
                let who = match subject {
                    Subject::CallerId => "caller ID",
                    Subject::Account => "account",
                };
                let cmp = if figure == "short_call_ratio" { "above" } else { "below" };
                format!("{who} {figure} {value:.3} {cmp} {limit} over {attempts} attempts")
            }
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether `callee` continues a sequential run after `prev`: a different number at most
/// `gap` away (up or down).
fn continues(prev: Option<u64>, callee: u64, gap: u64) -> bool {
    prev.is_some_and(|p| p != callee && p.abs_diff(callee) <= gap.max(1))
}

/// A sequential run in progress.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    last: Option<u64>,
    len: u32,
}

impl Run {
    /// The run's length if `callee` is dialled next. The last callee again (a retry, or the
    /// refused call of a report-mode account being let through) neither extends nor ends the
    /// run: retrying a number refused for the run is refused again.
    fn next(&self, callee: u64, gap: u64) -> u32 {
        if self.last == Some(callee) {
            self.len.max(1)
        } else if continues(self.last, callee, gap) {
            self.len.saturating_add(1)
        } else {
            1
        }
    }
    fn push(&mut self, callee: u64, gap: u64) -> u32 {
        self.len = self.next(callee, gap);
        self.last = Some(callee);
        self.len
    }
}

#[derive(Debug, Default)]
pub(super) struct Caller {
    window: Window,
    live: u32,
    run: Run,
}

/// A caller ID's state, shared by its account's map and by its live calls: the answer and
/// the end of a call reach it from the call, with no probe of the map, and its lines are
/// fetched while the account's lock is taken. Locked only under its account's lock.
pub(super) type CallerCell = Arc<Mutex<Caller>>;

fn lock_caller(c: &Mutex<Caller>) -> MutexGuard<'_, Caller> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start fetching the cache lines of `v` (a hint: it never faults, and does nothing where
/// the CPU has no such instruction). A live call's answer and end find their account and
/// caller ID cold; fetched together, they cost one memory latency instead of two.
pub(super) fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = (v as *const T).cast::<i8>();
        for off in (0..size_of::<T>()).step_by(64) {
            // SAFETY: PREFETCHT0 is a hint that reads nothing and cannot fault; `off` stays
            // inside `v`. SSE is part of the x86_64 baseline.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(off)) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Distinct callees over the last hour: the last time each was called, and the calls in
/// order so that they expire.
#[derive(Debug)]
struct Distinct {
    seen: NumberMap<u64>,
    order: VecDeque<(u64, u64)>,
    /// The time of `order`'s first call (`u64::MAX`: none), so that a call with nothing to
    /// expire reads no more than this.
    oldest: u64,
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct { seen: NumberMap::default(), order: VecDeque::new(), oldest: u64::MAX }
    }
}

const HOUR_MS: u64 = 3_600_000;

impl Distinct {
    fn expire(&mut self, now: u64) {
        if self.oldest.saturating_add(HOUR_MS) > now {
            return;
        }
        while let Some(&(t, callee)) = self.order.front() {
            if t + HOUR_MS > now {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&callee) == Some(&t) {
                self.seen.remove(&callee);
            }
        }
        self.oldest = self.order.front().map_or(u64::MAX, |&(t, _)| t);
    }

    fn add(&mut self, callee: u64, now: u64, cap: usize) {
        if self.seen.len() >= cap && !self.seen.contains_key(&callee) {
            return;
        }
        self.seen.insert(callee, now);
        if self.order.is_empty() {
            self.oldest = now;
        }
        self.order.push_back((now, callee));
        // Calls to callees seen again leave stale entries behind: rebuild from the map when
        // they outnumber it.
        if self.order.len() > 4 * cap.max(16) {
            let mut v: Vec<(u64, u64)> = self.seen.iter().map(|(&c, &t)| (t, c)).collect();
            v.sort_unstable();
            self.order = v.into();
            self.oldest = self.order.front().map_or(u64::MAX, |&(t, _)| t);
        }
    }
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    window: Window,
    live: u32,
    run: Run,
    callers: NumberMap<CallerCell>,
    /// Caller IDs tracked at most (`[screening] max_tracked_numbers`).
    caller_cap: usize,
    /// The step at which callers were last swept of empty entries.
    swept: u64,
    distinct: Distinct,
}

/// One account's behaviour state: its figures, its caller IDs' and its live calls. Kept
/// across reloads (the policy hands it to the new one); one lock per account.
#[derive(Debug)]
pub struct AccountBehaviour {
    inner: Mutex<Inner>,
}

/// An account's or a caller ID's figures at a moment (`GET /accounts/<id>`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub window_minutes: u32,
    pub attempts: u64,
    pub answered: u64,
    pub asr: Option<f64>,
    /// Answered calls whose BYE was seen (the ones with a duration).
    pub ended: u64,
    pub acd_seconds: Option<f64>,
    pub short_calls: u64,
    pub short_call_ratio: Option<f64>,
    pub longest_sequential_run: u32,
    pub concurrent: u32,
    /// Accounts only: distinct callees over the last hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_callees_last_hour: Option<u64>,
}

impl Figures {
    fn of(s: &Sums, limits: &Limits, live: u32, distinct: Option<u64>) -> Figures {
        let round = |x: Option<f64>| x.map(|v| (v * 10_000.0).round() / 10_000.0);
        Figures {
            window_minutes: limits.window_minutes,
            attempts: s.attempts,
            answered: s.answered,
            asr: round(s.asr()),
            ended: s.timed,
            acd_seconds: round(s.acd_seconds()),
            short_calls: s.short,
            short_call_ratio: round(s.short_ratio()),
            longest_sequential_run: s.longest_run,
            concurrent: live,
            distinct_callees_last_hour: distinct,
        }
    }
}

/// A tracked call's key: a keyed hash of its Call-ID and the caller's From tag.
pub type CallKey = u64;

impl AccountBehaviour {
    pub fn new(limits: Limits, caller_cap: usize) -> AccountBehaviour {
        AccountBehaviour {
            inner: Mutex::new(Inner {
                limits,
                window: Window::default(),
                live: 0,
                run: Run::default(),
                callers: NumberMap::default(),
                caller_cap: caller_cap.max(1),
                swept: 0,
                distinct: Distinct::default(),
            }),
        }
    }

    /// Start fetching this account's state (a hint, for a call about to be judged).
    pub fn prefetch(&self) {
        prefetch(self);
    }

    /// Fetch this account's state and the caller ID's at once, before the lock waits for
    /// the first.
    fn fetch(&self, caller: Option<&CallerCell>) {
        self.prefetch();
        if let Some(c) = caller {
            prefetch(&**c);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every writer leaves the state consistent between statements that can panic (none
        // on this path): a poisoned lock still holds usable figures.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take new limits (a reload). A changed window length starts the figures afresh (the
    /// buckets' steps would mean other times); live calls and runs carry over.
    pub fn set_limits(&self, limits: Limits, caller_cap: usize) {
        let mut g = self.lock();
        if g.limits.window_minutes != limits.window_minutes {
            g.window = Window::default();
            for c in g.callers.values() {
                lock_caller(c).window = Window::default();
            }
        }
        g.limits = limits;
        g.caller_cap = caller_cap.max(1);
    }

    pub fn limits(&self) -> Limits {
        self.lock().limits
    }

    /// Judge a call about to be let through, without counting it. A refused call still
    /// extends the sequential run it belongs to, so skipping a number does not reset it.
    pub fn judge(&self, caller: u64, callee: u64, now: SystemTime) -> Option<Trip> {
        let now = millis(now);
        let mut g = self.lock();
        let l = g.limits;
        // Its lines come in while the rules before the ratios are checked.
        if let Some(c) = g.callers.get(&caller) {
            prefetch(&**c);
        }
        if let Some(limit) = l.max_concurrent
            && g.live >= limit
        {
            return Some(Trip::Concurrent { live: g.live, limit });
        }
        if let Some(limit) = l.max_sequential {
            let run = g.run.next(callee, l.sequential_gap);
            if run > limit {
                g.run.push(callee, l.sequential_gap);
                return Some(Trip::Sequential { run, limit });
            }
        }
        if let Some(limit) = l.max_distinct_callees_per_hour {
            g.distinct.expire(now);
            let seen = g.distinct.seen.len();
            if !g.distinct.seen.contains_key(&callee) && seen >= limit as usize {
                return Some(Trip::Distinct { seen: u32::try_from(seen).unwrap_or(u32::MAX), limit });
            }
        }
        let step = now / l.step_ms();
        if l.action != Action::SuspendAccount
            && let Some(c) = g.callers.get(&caller)
            && let Some(t) = ratio_trip(&lock_caller(c).window.sums(step), &l, Subject::CallerId)
        {
            return Some(t);
        }
        if l.action != Action::SuspendCallerId {
            return ratio_trip(&g.window.sums(step), &l, Subject::Account);
        }
        None
    }

    /// Count a call let through: an attempt for the account and its caller ID, a live call,
    /// the sequential run and the distinct callees; the account's `max_call_seconds` in ms.
    /// `Err` when `max_concurrent` is reached (another call took the last slot since
    /// `judge`): nothing is counted then. With the caller ID's state, unless the account
    /// tracks as many caller IDs as it may.
    fn start(&self, caller: u64, callee: u64, now: u64, force: bool) -> Result<(u64, Option<CallerCell>), Trip> {
        let mut g = self.lock();
        let l = g.limits;
        if let Some(limit) = l.max_concurrent
            && g.live >= limit
            && !force
        {
            return Err(Trip::Concurrent { live: g.live, limit });
        }
        let step = now / l.step_ms();
        let run = g.run.push(callee, l.sequential_gap);
        g.live = g.live.saturating_add(1);
        g.window.update(step, step, true, |b| {
            b.attempts = b.attempts.saturating_add(1);
            b.run = b.run.max(run);
        });
        let cap = l.max_distinct_callees_per_hour.map_or(DISTINCT_FIGURE_CAP, |n| n as usize);
        g.distinct.expire(now);
        g.distinct.add(callee, now, cap);
        if step > g.swept {
            g.swept = step;
            g.callers.retain(|_, c| {
                let mut c = lock_caller(c);
                c.window.prune(step);
                c.live > 0 || !c.window.is_empty()
            });
        }
        let full = g.callers.len() >= g.caller_cap;
        let cell = match g.callers.get(&caller) {
            Some(c) => Some(c.clone()),
            None if full => None,
            None => Some(g.callers.entry(caller).or_default().clone()),
        };
        if let Some(cell) = &cell {
            let mut c = lock_caller(cell);
            let run = c.run.push(callee, l.sequential_gap);
            c.live = c.live.saturating_add(1);
            c.window.update(step, step, true, |b| {
                b.attempts = b.attempts.saturating_add(1);
                b.run = b.run.max(run);
            });
        }
        Ok((u64::from(l.max_call_seconds) * 1000, cell))
    }

    /// Give back a live slot taken by `start` for a call that is not tracked after all.
    fn unlive(&self, caller: Option<&CallerCell>) {
        let mut g = self.lock();
        g.live = g.live.saturating_sub(1);
        if let Some(c) = caller {
            let mut c = lock_caller(c);
            c.live = c.live.saturating_sub(1);
        }
    }

    /// Take back a whole `start` (a call that was not forwarded after all).
    fn unstart(&self, caller: Option<&CallerCell>, started: u64, now: u64) {
        let mut g = self.lock();
        let step_ms = g.limits.step_ms();
        let (step, now) = (started / step_ms, now / step_ms);
        g.live = g.live.saturating_sub(1);
        g.window.update(step, now, false, |b| b.attempts = b.attempts.saturating_sub(1));
        if let Some(c) = caller {
            let mut c = lock_caller(c);
            c.live = c.live.saturating_sub(1);
            c.window.update(step, now, false, |b| b.attempts = b.attempts.saturating_sub(1));
        }
    }

    /// A tracked call was answered (first 2xx).
    fn answered(&self, caller: Option<&CallerCell>, started: u64, now: u64) {
        self.fetch(caller);
        let mut g = self.lock();
        let step_ms = g.limits.step_ms();
        let (step, now) = (started / step_ms, now / step_ms);
        let answer = |b: &mut window::Bucket| b.answered = b.answered.saturating_add(1);
        g.window.update(step, now, false, answer);
        if let Some(c) = caller {
            lock_caller(c).window.update(step, now, false, answer);
        }
    }

    /// A tracked call ended: `duration` (ms) when it was answered and its BYE was seen.
    fn ended(&self, caller: Option<&CallerCell>, started: u64, now: u64, duration: Option<u64>) {
        self.fetch(caller);
        let mut g = self.lock();
        let step_ms = g.limits.step_ms();
        let short_ms = u64::from(g.limits.short_call_seconds) * 1000;
        let (step, now) = (started / step_ms, now / step_ms);
        let time = |b: &mut window::Bucket| {
            if let Some(d) = duration {
                b.timed = b.timed.saturating_add(1);
                b.millis = b.millis.saturating_add(d);
                if d < short_ms {
                    b.short = b.short.saturating_add(1);
                }
            }
        };
        g.live = g.live.saturating_sub(1);
        g.window.update(step, now, false, time);
        if let Some(c) = caller {
            let mut c = lock_caller(c);
            c.live = c.live.saturating_sub(1);
            c.window.update(step, now, false, time);
        }
    }

    /// The account's figures at `now`.
    pub fn figures(&self, now: SystemTime) -> Figures {
        let now = millis(now);
        let mut g = self.lock();
        let step = now / g.limits.step_ms();
        g.distinct.expire(now);
        let distinct = g.distinct.seen.len() as u64;
        Figures::of(&g.window.sums(step), &g.limits, g.live, Some(distinct))
    }

    /// Each caller ID's figures at `now`, most attempts first, at most `limit` of them.
    pub fn caller_figures(&self, now: SystemTime, limit: usize) -> Vec<(u64, Figures)> {
        let now = millis(now);
        let g = self.lock();
        let step = now / g.limits.step_ms();
        let mut v: Vec<(u64, Figures)> = g
            .callers
            .iter()
            .map(|(&n, c)| {
                let c = lock_caller(c);
                (n, Figures::of(&c.window.sums(step), &g.limits, c.live, None))
            })
            .filter(|(_, f)| f.attempts > 0 || f.concurrent > 0)
            .collect();
        v.sort_unstable_by(|a, b| b.1.attempts.cmp(&a.1.attempts).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        v
    }

    /// Caller IDs and window buckets held (memory accounting).
    pub fn held(&self) -> (usize, usize) {
        let g = self.lock();
        let buckets = g.window.len() + g.callers.values().map(|c| lock_caller(c).window.len()).sum::<usize>();
        (g.callers.len(), buckets)
    }
}

/// The ratio rule a subject's figures trip, past `min_attempts`.
fn ratio_trip(s: &Sums, l: &Limits, subject: Subject) -> Option<Trip> {
    if s.attempts < u64::from(l.min_attempts.max(1)) {
        return None;
    }
    let trip = |figure, value, limit| Some(Trip::Ratio { subject, figure, value, limit, attempts: s.attempts });
    if let (Some(min), Some(asr)) = (l.min_asr, s.asr())
        && asr < min
    {
        return trip("asr", asr, min);
    }
    if let (Some(max), Some(r)) = (l.max_short_call_ratio, s.short_ratio())
        && r > max
    {
        return trip("short_call_ratio", r, max);
    }
    if let (Some(min), Some(acd)) = (l.min_acd_seconds, s.acd_seconds())
        && acd < f64::from(min)
    {
        return trip("acd_seconds", acd, f64::from(min));
    }
    None
}

/// A call by its Call-ID and the caller's From tag, for a caller that has no key of its own
/// for it (the HTTP decision API, tests): `Behaviour::key` derives one.
#[derive(Debug, Clone, Copy)]
pub struct CallRef<'a> {
    pub call_id: &'a [u8],
    pub caller_tag: &'a [u8],
}

/// What the proxy saw of a call it relayed. Each call is named by the key the proxy screened
/// it under (`screen::Call::key`: a keyed hash of its Call-ID and the caller's From tag,
/// the verdict cache's key), so an event costs no hash of its own.
#[derive(Debug, Clone, Copy)]
pub enum CallEvent {
    /// A final response (`code` >= 200) to a forwarded INVITE, its branch verified.
    Final { call: CallKey, code: u16 },
    /// A BYE that proved its dialog was record-routed here.
    Bye { call: CallKey },
    /// A BYE without that proof: the keys of its Call-ID with its From tag and with its To
    /// tag (either may be the caller's).
    UnprovenBye { calls: [CallKey; 2] },
}

/// The behaviour engine: the live-call tracker. Account state lives with each account's
/// policy; the tracker holds an `Arc` to it, and to the caller ID's state, for each live
/// call. Locks are taken in one order: a tracker shard, an account, a caller ID.
#[derive(Debug)]
pub struct Behaviour {
    pub tracker: Tracker,
}

impl Behaviour {
    pub fn new(max_tracked_calls: usize) -> Behaviour {
        Behaviour { tracker: Tracker::new(max_tracked_calls) }
    }

    /// The key a call is tracked by when its caller has none (see `CallEvent`).
    pub fn key(&self, call: CallRef<'_>) -> CallKey {
        self.tracker.key(call)
    }

    /// Start fetching what tracking the call `key` will read (its shard), to overlap with
    /// the account's work that comes first.
    pub fn prefetch(&self, key: CallKey) {
        self.tracker.prefetch(key)
    }

    /// Count a call let through and track it: true when tracked (its answer and end will
    /// be seen), false when counted but not tracked (the tracker is full), or when the same
    /// call is tracked already (screened again: a re-INVITE without Record-Route; counted
    /// once). `force`: count it even past `max_concurrent` (a call whose other counts are
    /// committed elsewhere already). `Err` when `max_concurrent` is reached: nothing is
    /// counted.
    pub fn start(
        &self,
        acct: &Arc<AccountBehaviour>,
        key: CallKey,
        (caller, callee): (u64, u64),
        now: SystemTime,
        force: bool,
    ) -> Result<bool, Trip> {
        let now = millis(now);
        self.tracker.expire(now);
        self.tracker.start(key, acct, now, || acct.start(caller, callee, now, force))
    }

    /// Take back a `start`: the call was not forwarded after all.
    pub fn unstart(&self, key: CallKey) {
        if let Some(live) = self.tracker.remove(key) {
            live.acct.unstart(live.caller.as_ref(), live.started, live.started);
        }
    }

    /// Apply an event the proxy relayed.
    pub fn event(&self, ev: CallEvent, now: SystemTime) {
        let now = millis(now);
        self.tracker.expire(now);
        match ev {
            CallEvent::Final { call, code } => self.tracker.response(call, code, now),
            CallEvent::Bye { call } => self.tracker.bye(call, now),
            CallEvent::UnprovenBye { calls } => self.tracker.unproven_bye(calls),
        }
    }

    /// Expire what is due (the figures read it).
    pub fn expire(&self, now: SystemTime) {
        self.tracker.expire(millis(now));
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Behaviour>();
    f::<AccountBehaviour>();
}
