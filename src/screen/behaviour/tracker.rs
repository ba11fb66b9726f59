//! The calls ringing or answered now, bounded (`max_tracked_calls`) and expiring. Sharded:
//! each shard is a table of calls found by their keyed hash, and a min-heap of deadlines;
//! an entry is removed exactly once (answer timeout, final non-2xx, BYE, or expiry), and
//! only that removal gives its account's live slot back.
//!
//! A call's answer and its BYE come long after its INVITE, when nothing of it is in the
//! cache any more: each call is one cache line (found by one probe of its shard's table),
//! and each call has one deadline in the heap at a time.

use super::{AccountBehaviour, CallRef, CallerCell, RING_SECONDS, Trip};
use hashbrown::HashTable;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 16;

/// Stale deadlines a shard may hold beyond two per live call before its heap is rebuilt
/// (a rebuild reads every call of the shard, so it is made rare).
pub(super) const HEAP_SLACK: usize = 256;

/// A live call, in one cache line.
#[derive(Debug)]
#[repr(C, align(64))]
pub(super) struct Live {
    /// The call's keyed hash (its key in the table, and the table's hash).
    key: u64,
    pub(super) acct: Arc<AccountBehaviour>,
    /// None when the account tracks as many caller IDs as it may.
    pub(super) caller: Option<CallerCell>,
    /// Milliseconds since the epoch: INVITE let through, first 2xx (0 while ringing).
    pub(super) started: u64,
    answered: u64,
    max_call_ms: u64,
    /// When the call expires.
    deadline: u64,
    /// The deadline of its entry in the heap (at most `deadline`: an entry that comes due
    /// before the call does is pushed again for the call's own deadline).
    armed: u64,
}

#[derive(Debug, Default)]
struct Shard {
    calls: HashTable<Live>,
    /// (deadline, key): each call's armed deadline, and stale ones of calls that ended.
    due: BinaryHeap<Reverse<(u64, u64)>>,
}

impl Shard {
    fn find(&self, key: u64) -> Option<&Live> {
        self.calls.find(key, |l| l.key == key)
    }
    fn find_mut(&mut self, key: u64) -> Option<&mut Live> {
        self.calls.find_mut(key, |l| l.key == key)
    }
    fn take(&mut self, key: u64) -> Option<Live> {
        self.calls.find_entry(key, |l| l.key == key).ok().map(|e| e.remove().0)
    }
}

/// A shard on cache lines of its own: its lock and its table's header are read together.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ShardCell(Mutex<Shard>);

/// Counts of what the tracker saw, for the shell to export.
#[derive(Debug, Default)]
pub struct TrackerStats {
    pub answered: AtomicU64,
    pub unanswered: AtomicU64,
    pub ended: AtomicU64,
    pub expired_ringing: AtomicU64,
    pub expired_answered: AtomicU64,
    pub untracked: AtomicU64,
    pub retransmissions: AtomicU64,
    /// BYEs of tracked calls relayed without the dialog proof (their calls stay live).
    pub unproven_byes: AtomicU64,
}

#[derive(Debug)]
pub struct Tracker {
    shards: Box<[ShardCell]>,
    /// Each shard's earliest deadline (u64::MAX: none), read without its lock.
    next: Box<[AtomicU64]>,
    /// Keys the calls of callers that bring no key of their own (`Behaviour::key`) with a
    /// per-process random key (SipHash): Call-IDs are chosen by the sender. The proxy's keys
    /// are keyed hashes too, under its secret.
    hasher: std::collections::hash_map::RandomState,
    len: AtomicUsize,
    cap: AtomicUsize,
    pub stats: TrackerStats,
    /// The first unproven BYE of a tracked call was logged.
    warned_unproven: AtomicBool,
}

fn lock(m: &ShardCell) -> MutexGuard<'_, Shard> {
    m.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// Deadlines of calls that ended before them stay in the heap until they pass: rebuild it
/// from the calls when they outnumber them, so it holds at most two per live call and
/// `HEAP_SLACK`.
fn compact(s: &mut Shard) {
    if s.due.len() > 2 * s.calls.len() + HEAP_SLACK {
        for l in s.calls.iter_mut() {
            l.armed = l.deadline;
        }
        s.due = s.calls.iter().map(|l| Reverse((l.deadline, l.key))).collect();
    }
}

impl Tracker {
    pub fn new(cap: usize) -> Tracker {
        Tracker {
            shards: (0..SHARDS).map(|_| ShardCell::default()).collect(),
            next: (0..SHARDS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            hasher: Default::default(),
            len: AtomicUsize::new(0),
            cap: AtomicUsize::new(cap),
            stats: TrackerStats::default(),
            warned_unproven: AtomicBool::new(false),
        }
    }

    /// A reload may change the cap; calls beyond a lowered one stay until they end.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Calls tracked now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn key(&self, call: CallRef<'_>) -> u64 {
        self.hasher.hash_one((call.call_id, call.caller_tag))
    }

    /// The shard of `key`. Middle bits: the table takes its bucket from the low bits and its
    /// tag from the top.
    fn index(key: u64) -> usize {
        (key >> 32) as usize % SHARDS
    }

    fn shard(&self, key: u64) -> (usize, MutexGuard<'_, Shard>) {
        let i = Self::index(key);
        (i, lock(&self.shards[i]))
    }

    /// Start fetching the shard of `key` (its lock and its table's header).
    pub(super) fn prefetch(&self, key: u64) {
        if let Some(s) = self.shards.get(Self::index(key)) {
            super::prefetch(s);
        }
    }

    fn publish(&self, i: usize, s: &Shard) {
        let next = s.due.peek().map_or(u64::MAX, |Reverse((d, _))| *d);
        self.next[i].store(next, Ordering::Relaxed);
    }

    /// Count a call with `count` and track it as ringing: true when tracked. False when it
    /// is tracked already (nothing counted: the same call screened again), or when the
    /// tracker is full (counted, its live slot given back). `count` runs under the shard's
    /// lock, so a call arriving twice at once is counted once; it takes the account's lock,
    /// and nothing takes a shard's lock while holding an account's.
    pub(super) fn start(
        &self,
        key: u64,
        acct: &Arc<AccountBehaviour>,
        now: u64,
        count: impl FnOnce() -> Result<(u64, Option<CallerCell>), Trip>,
    ) -> Result<bool, Trip> {
        let (i, mut s) = self.shard(key);
        if s.find(key).is_some() {
            return Ok(false);
        }
        let (max_call_ms, caller) = count()?;
        if self.len.load(Ordering::Relaxed) >= self.cap.load(Ordering::Relaxed) {
            drop(s);
            self.stats.untracked.fetch_add(1, Ordering::Relaxed);
            acct.unlive(caller.as_ref());
            return Ok(false);
        }
        compact(&mut s);
        let deadline = now.saturating_add(RING_SECONDS * 1000);
        let live =
            Live { key, acct: acct.clone(), caller, started: now, answered: 0, max_call_ms, deadline, armed: deadline };
        s.calls.insert_unique(key, live, |l| l.key);
        s.due.push(Reverse((deadline, key)));
        self.len.fetch_add(1, Ordering::Relaxed);
        self.publish(i, &s);
        Ok(true)
    }

    /// Stop tracking a call (no figures change here).
    pub(super) fn remove(&self, key: u64) -> Option<Live> {
        let (_, mut s) = self.shard(key);
        let live = s.take(key)?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(live)
    }

    /// A final response to the call's INVITE.
    pub(super) fn response(&self, key: u64, code: u16, now: u64) {
        let (i, mut s) = self.shard(key);
        let Some(live) = s.find_mut(key) else { return };
        match code {
            200..=299 if live.answered == 0 => {
                live.answered = now.max(1);
                live.deadline = now.saturating_add(live.max_call_ms);
                // The ringing deadline's entry stays armed when it comes first: it is
                // pushed again for this one when it comes due.
                let earlier = live.deadline < live.armed;
                if earlier {
                    live.armed = live.deadline;
                }
                self.stats.answered.fetch_add(1, Ordering::Relaxed);
                // Under the shard's lock (shard, then account: the order `start` takes).
                live.acct.answered(live.caller.as_ref(), live.started, now);
                if earlier {
                    let deadline = live.deadline;
                    s.due.push(Reverse((deadline, key)));
                    self.publish(i, &s);
                }
            }
            // A retransmitted 2xx, or a re-INVITE's answer in an answered call.
            _ if live.answered != 0 => {
                self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
            }
            // Challenges and glare: the INVITE is retried as the same call.
            401 | 407 | 422 | 491 => {}
            300.. => {
                let Some(live) = s.take(key) else { return };
                drop(s);
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                live.acct.ended(live.caller.as_ref(), live.started, now, None);
            }
            _ => {}
        }
    }

    /// A BYE in the call's dialog: an answered call ends with its duration; one that was
    /// still ringing ends unanswered.
    pub(super) fn bye(&self, key: u64, now: u64) {
        let Some(live) = self.remove(key) else { return };
        let duration = (live.answered != 0).then(|| now.saturating_sub(live.answered));
        if duration.is_some() {
            self.stats.ended.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
        }
        live.acct.ended(live.caller.as_ref(), live.started, now, duration);
    }

    /// A BYE relayed without the dialog proof: it may have been aimed anywhere, so it ends
    /// nothing; counted (and the first one logged) when it names a tracked call, because a
    /// user agent that ignores Record-Route keeps its calls live until `max_call_seconds`.
    pub(super) fn unproven_bye(&self, keys: [u64; 2]) {
        let tracked = keys.iter().any(|&k| self.shard(k).1.find(k).is_some());
        if !tracked {
            return;
        }
        self.stats.unproven_byes.fetch_add(1, Ordering::Relaxed);
        if !self.warned_unproven.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a BYE of a tracked call came without our Record-Route in its Route header: the call stays \
                 counted as live until max_call_seconds (does its user agent ignore Record-Route?); \
                 sipguard_behaviour_call_events_total{{event=\"unproven_bye\"}} counts them"
            );
        }
    }

    /// End every call whose deadline has passed. Costs one relaxed load per shard when
    /// nothing is due.
    pub fn expire(&self, now: u64) {
        for i in 0..SHARDS {
            if self.next[i].load(Ordering::Relaxed) > now {
                continue;
            }
            let mut gone = Vec::new();
            {
                let mut s = lock(&self.shards[i]);
                while let Some(&Reverse((deadline, key))) = s.due.peek() {
                    if deadline > now {
                        break;
                    }
                    s.due.pop();
                    let Some(live) = s.find_mut(key).filter(|l| l.armed == deadline) else { continue };
                    if live.deadline > now {
                        // Answered since its entry was pushed: armed again for its own end.
                        live.armed = live.deadline;
                        let again = live.deadline;
                        s.due.push(Reverse((again, key)));
                    } else if let Some(live) = s.take(key) {
                        gone.push(live);
                    }
                }
                self.publish(i, &s);
            }
            for live in gone {
                self.len.fetch_sub(1, Ordering::Relaxed);
                let stat = if live.answered != 0 { &self.stats.expired_answered } else { &self.stats.expired_ringing };
                stat.fetch_add(1, Ordering::Relaxed);
                live.acct.ended(live.caller.as_ref(), live.started, now, None);
            }
        }
    }

    /// Deadline entries held (at most about two per live call), for memory accounting.
    pub fn heap_len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).due.len()).sum()
    }
}
