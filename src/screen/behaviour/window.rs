//! A sliding window of call figures: `STEPS` buckets, each `window / STEPS` long, kept only
//! while they hold something (a caller ID that called in three steps of the window holds
//! three buckets). Figures are attributed to the step in which the call was attempted, so
//! that within any window `answered <= attempts` and `short <= timed <= answered`.

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
}

/// One subject's window (a caller ID, or an account).
#[derive(Debug, Clone, Default)]
pub struct Window {
    buckets: VecDeque<Bucket>,
}

impl Window {
    /// Buckets held (for memory accounting and eviction).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Drop the buckets that left the window at step `now`: a bucket covers its step, and
    /// the window is the `STEPS` steps ending with `now`'s.
    pub fn prune(&mut self, now: u64) {
        while self.buckets.front().is_some_and(|b| b.step + STEPS <= now) {
            self.buckets.pop_front();
        }
    }

    /// The bucket of `step`, created when `create` and it is still in the window at `now`.
    /// None for a step that has left the window (its figures no longer count).
    pub fn at(&mut self, step: u64, now: u64, create: bool) -> Option<&mut Bucket> {
        self.prune(now);
        if step + STEPS <= now {
            return None;
        }
        // Nearly always the last bucket (the current step); a clock that stepped back puts
        // a call before it, in order.
        let pos = self.buckets.iter().rposition(|b| b.step <= step);
        match pos {
            Some(i) if self.buckets.get(i).is_some_and(|b| b.step == step) => self.buckets.get_mut(i),
            _ if !create => None,
            Some(i) => {
                self.buckets.insert(i + 1, Bucket { step, ..Bucket::default() });
                self.buckets.get_mut(i + 1)
            }
            None => {
                self.buckets.push_front(Bucket { step, ..Bucket::default() });
                self.buckets.front_mut()
            }
        }
    }

    /// The sums over the window at step `now` (buckets that left it are not counted, even
    /// before they are pruned).
    pub fn sums(&self, now: u64) -> Sums {
        let mut s = Sums::default();
        for b in self.buckets.iter().filter(|b| b.step + STEPS > now && b.step <= now) {
            s.attempts += u64::from(b.attempts);
            s.answered += u64::from(b.answered);
            s.timed += u64::from(b.timed);
            s.short += u64::from(b.short);
            s.millis += b.millis;
            s.longest_run = s.longest_run.max(b.run);
        }
        s
    }
}
