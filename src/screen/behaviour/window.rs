//! A sliding window of call figures: `STEPS` buckets, each `window / STEPS` long, kept only
//! while they hold something (a caller ID that called in three steps of the window holds
//! three buckets). Figures are attributed to the step in which the call was attempted, so
//! that within any window `answered <= attempts` and `short <= timed <= answered`.
//!
//! The newest bucket is held inline and the sums over the window are kept with every change:
//! counting a call, its answer or its end, and judging the next one, read no memory beyond
//! the subject's own entry. The older buckets are touched only when one leaves the window
//! (once per step) and for a call attempted in an older step than the newest.

use std::collections::VecDeque;

/// Buckets per window: the window slides in steps of 1/30 of its length (12 minutes for
/// the default 6 hours).
pub const STEPS: u64 = 30;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Step number (milliseconds since the epoch / step length).
    pub step: u64,
    pub attempts: u32,
    pub answered: u32,
    /// Answered calls whose end (BYE) was seen: the ones with a known duration.
    pub timed: u32,
    /// Timed calls shorter than `short_call_seconds`.
    pub short: u32,
    /// Sum of the timed calls' durations in milliseconds.
    pub millis: u64,
    /// Longest sequential run reached by a call attempted in this step.
    pub run: u32,
}

/// The sums over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub attempts: u64,
    pub answered: u64,
    pub timed: u64,
    pub short: u64,
    pub millis: u64,
    pub longest_run: u32,
}

impl Sums {
    /// Answer-seizure ratio, when there was an attempt.
    pub fn asr(&self) -> Option<f64> {
        (self.attempts > 0).then(|| self.answered as f64 / self.attempts as f64)
    }
    /// Average call duration in seconds over the calls with a known duration.
    pub fn acd_seconds(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.millis as f64 / 1000.0 / self.timed as f64)
    }
    /// Short calls among the calls with a known duration.
    pub fn short_ratio(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.short as f64 / self.timed as f64)
    }

    fn add(&mut self, b: &Bucket) {
        self.attempts += u64::from(b.attempts);
        self.answered += u64::from(b.answered);
        self.timed += u64::from(b.timed);
        self.short += u64::from(b.short);
        self.millis = self.millis.saturating_add(b.millis);
        self.longest_run = self.longest_run.max(b.run);
    }
}

/// `total - before + after`, for a sum that holds `before`.
fn moved(total: u64, before: u64, after: u64) -> u64 {
    total.saturating_sub(before).saturating_add(after)
}

/// One subject's window (a caller ID, or an account).
#[derive(Debug, Clone)]
pub struct Window {
    /// The newest bucket held.
    head: Option<Bucket>,
    /// The older buckets held, oldest first (all before `head`'s step).
    older: VecDeque<Bucket>,
    /// Sums over every bucket held.
    total: Sums,
    /// The step at which the oldest bucket held leaves the window (`u64::MAX`: none held).
    leaves: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window { head: None, older: VecDeque::new(), total: Sums::default(), leaves: u64::MAX }
    }
}

impl Window {
    /// Buckets held (for memory accounting and eviction).
    pub fn len(&self) -> usize {
        self.older.len() + usize::from(self.head.is_some())
    }

    pub fn is_empty(&self) -> bool {
        // `older` is only ever filled behind a head, and emptied before it.
        self.head.is_none()
    }

    /// Drop the buckets that left the window at step `now`: a bucket covers its step, and
    /// the window is the `STEPS` steps ending with `now`'s.
    pub fn prune(&mut self, now: u64) {
        if now < self.leaves {
            return;
        }
        while self.older.front().is_some_and(|b| b.step + STEPS <= now) {
            self.older.pop_front();
        }
        if self.older.is_empty() && self.head.is_some_and(|h| h.step + STEPS <= now) {
            self.head = None;
        }
        self.total = Sums::default();
        for b in self.older.iter().chain(&self.head) {
            self.total.add(b);
        }
        self.leaves = self.older.front().or(self.head.as_ref()).map_or(u64::MAX, |b| b.step + STEPS);
    }

    /// Change the bucket of `step` with `f`, creating it when `create`: false when there is
    /// none, or the step has left the window at `now` (its figures no longer count).
    pub fn update(&mut self, step: u64, now: u64, create: bool, f: impl FnOnce(&mut Bucket)) -> bool {
        self.prune(now);
        if step + STEPS <= now {
            return false;
        }
        let Some(b) = self.slot(step, create) else { return false };
        let before = *b;
        f(b);
        let after = *b;
        let t = &mut self.total;
        t.attempts = moved(t.attempts, before.attempts.into(), after.attempts.into());
        t.answered = moved(t.answered, before.answered.into(), after.answered.into());
        t.timed = moved(t.timed, before.timed.into(), after.timed.into());
        t.short = moved(t.short, before.short.into(), after.short.into());
        t.millis = moved(t.millis, before.millis, after.millis);
        if after.run >= before.run {
            t.longest_run = t.longest_run.max(after.run);
        } else {
            t.longest_run = self.older.iter().chain(&self.head).map(|b| b.run).max().unwrap_or(0);
        }
        true
    }

    /// The bucket of `step` (nearly always the head: the current step's; a clock that
    /// stepped back puts a call before it, in order).
    fn slot(&mut self, step: u64, create: bool) -> Option<&mut Bucket> {
        let fresh = Bucket { step, ..Bucket::default() };
        let head_step = self.head.map(|h| h.step);
        if head_step.is_none_or(|h| step > h) {
            if !create {
                return None;
            }
            if let Some(h) = self.head.replace(fresh) {
                self.older.push_back(h);
            }
            self.leaves = self.leaves.min(step + STEPS);
            return self.head.as_mut();
        }
        if head_step == Some(step) {
            return self.head.as_mut();
        }
        let pos = self.older.iter().rposition(|b| b.step <= step);
        match pos {
            Some(i) if self.older.get(i).is_some_and(|b| b.step == step) => self.older.get_mut(i),
            _ if !create => None,
            Some(i) => {
                self.older.insert(i + 1, fresh);
                self.older.get_mut(i + 1)
            }
            None => {
                self.older.push_front(fresh);
                self.leaves = self.leaves.min(step + STEPS);
                self.older.front_mut()
            }
        }
    }

    /// The bucket of `step`, when held (tests look at buckets; the figures need only sums).
    #[cfg(test)]
    pub fn bucket(&self, step: u64) -> Option<&Bucket> {
        self.older.iter().chain(&self.head).find(|b| b.step == step)
    }

    /// The sums over the window at step `now` (buckets that left it are not counted, even
    /// before they are pruned; nor are buckets of steps after `now`).
    pub fn sums(&self, now: u64) -> Sums {
        if now < self.leaves && self.head.is_none_or(|h| h.step <= now) {
            return self.total;
        }
        let mut s = Sums::default();
        for b in self.older.iter().chain(&self.head).filter(|b| b.step + STEPS > now && b.step <= now) {
            s.add(b);
        }
        s
    }
}
