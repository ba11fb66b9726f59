//! The verdict cache: one screening per call. Keyed by a keyed hash of (Call-ID, From tag),
//! so that retransmissions, the retry after a 401/407 challenge and the CANCEL find the
//! verdict; each entry also holds a hash of the facts screened, which a hit must match.
//! Bounded in size and entries expire after 32 s (64*T1, the INVITE transaction lifetime),
//! so network data cannot grow it without limit; the keys are SipHash outputs under our
//! secret, so nobody can choose keys that collide in the map.
//!
//! Two generations instead of an expiry queue: inserts go to the current map, which becomes
//! the previous one every TTL (or when it holds half the cap), and the previous one is then
//! dropped whole. Below the cap an entry therefore stays stored at least its TTL (expiry is
//! checked on every look-up); above it (more than cap/2 new INVITEs per TTL, i.e. over 3125
//! a second with the proxy's cap) entries go sooner, oldest first, but still live for at
//! least the time it takes to fill a generation, far longer than retransmissions come. An
//! insert never has to find and remove an old entry elsewhere in memory: at thousands of
//! INVITEs a second that removal was a cache miss per call.

use crate::screen::Verdict;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const TTL: Duration = Duration::from_secs(32);

/// Keys are already keyed hashes: hashing them again would be wasted work.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A cached verdict and the facts it was reached on.
#[derive(Debug, Clone)]
pub struct Entry {
    pub facts: u64,
    pub verdict: Arc<Verdict>,
    /// CSeq number of the INVITE a 2xx answered, once one has been relayed.
    pub answered: Option<u64>,
    /// The call waits for a lookup (its verdict is a placeholder until then).
    pub pending: Pending,
    expires: SystemTime,
}

/// A call whose screening waits for a lookup: retransmissions are absorbed meanwhile, and a
/// CANCEL is answered at once and ends the call when the lookup is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pending {
    #[default]
    No,
    Waiting,
    Cancelled,
}

type Generation = HashMap<u64, Entry, BuildHasherDefault<KeyHasher>>;

pub struct VerdictCache {
    current: Generation,
    previous: Generation,
    /// When `current` started; it turns into `previous` one TTL later.
    started: SystemTime,
    /// Entries per generation: half the cap.
    per_generation: usize,
}

impl VerdictCache {
    pub fn new(cap: usize) -> Self {
        let per_generation = (cap / 2).max(1);
        let map = || Generation::with_capacity_and_hasher(per_generation.min(1 << 16), BuildHasherDefault::default());
        VerdictCache { current: map(), previous: map(), started: SystemTime::UNIX_EPOCH, per_generation }
    }

    pub fn get(&self, key: u64, now: SystemTime) -> Option<&Entry> {
        let hit = self.current.get(&key).or_else(|| self.previous.get(&key));
        hit.filter(|e| e.expires > now)
    }

    pub fn remove(&mut self, key: u64) {
        self.current.remove(&key);
        self.previous.remove(&key);
    }

    pub fn insert(&mut self, key: u64, facts: u64, verdict: Arc<Verdict>, now: SystemTime) {
        self.insert_entry(key, facts, verdict, Pending::No, now)
    }

    fn insert_entry(&mut self, key: u64, facts: u64, verdict: Arc<Verdict>, pending: Pending, now: SystemTime) {
        let aged = now.duration_since(self.started).map_or(true, |age| age >= TTL);
        if aged || self.current.len() >= self.per_generation {
            // Everything in `previous` is at least a TTL old, or the cap is reached.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            self.started = now;
        }
        // A newer verdict for the same call replaces one in the previous generation too.
        self.previous.remove(&key);
        self.current.insert(key, Entry { facts, verdict, answered: None, pending, expires: now + TTL });
    }

    /// Mark a pending call cancelled; false when it is not pending.
    pub fn cancel_pending(&mut self, key: u64) -> bool {
        for g in [&mut self.current, &mut self.previous] {
            if let Some(e) = g.get_mut(&key)
                && e.pending == Pending::Waiting
            {
                e.pending = Pending::Cancelled;
                return true;
            }
        }
        false
    }

    /// Record that the call's INVITE with CSeq `cseq` was answered with a 2xx.
    pub fn answered(&mut self, key: u64, cseq: u64) {
        for g in [&mut self.current, &mut self.previous] {
            if let Some(e) = g.get_mut(&key) {
                e.answered = Some(e.answered.map_or(cseq, |a| a.max(cseq)));
            }
        }
    }

    /// Entries stored (expired ones included until their generation is dropped).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The verdict cache split into shards by key, each behind its own lock, so threads
/// handling messages at once rarely wait for each other (and never across an await).
pub struct SharedCache {
    shards: Box<[std::sync::Mutex<VerdictCache>]>,
}

const SHARDS: usize = 16;

impl SharedCache {
    pub fn new(cap: usize) -> SharedCache {
        SharedCache { shards: (0..SHARDS).map(|_| std::sync::Mutex::new(VerdictCache::new(cap / SHARDS))).collect() }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, VerdictCache> {
        // Keys are keyed hashes: their low bits are as good as any.
        self.shards[(key as usize) % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: u64, now: SystemTime) -> Option<Entry> {
        self.shard(key).get(key, now).cloned()
    }

    pub fn insert(&self, key: u64, facts: u64, verdict: Arc<Verdict>, now: SystemTime) {
        self.shard(key).insert(key, facts, verdict, now)
    }

    /// Record that the call waits for a lookup.
    pub fn insert_pending(&self, key: u64, facts: u64, now: SystemTime) {
        self.shard(key).insert_entry(key, facts, Verdict::shared_forward(), Pending::Waiting, now)
    }

    pub fn cancel_pending(&self, key: u64) -> bool {
        self.shard(key).cancel_pending(key)
    }

    pub fn remove(&self, key: u64) {
        self.shard(key).remove(key)
    }

    pub fn answered(&self, key: u64, cseq: u64) {
        self.shard(key).answered(key, cseq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_after_ttl_and_is_bounded() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v = Verdict::shared_forward;
        let mut c = VerdictCache::new(2);
        c.insert(1, 0, v(), t0);
        assert!(c.get(1, t0 + Duration::from_secs(31)).is_some());
        assert!(c.get(1, t0 + TTL).is_none());
        c.insert(2, 0, v(), t0);
        c.insert(3, 0, v(), t0);
        assert_eq!(c.len(), 2);
        assert!(c.get(1, t0).is_none(), "oldest evicted at the cap");
        assert!(c.get(2, t0).is_some() && c.get(3, t0).is_some());
        c.insert(4, 0, v(), t0 + TTL);
        assert!(c.len() <= 2);
        assert!(c.get(3, t0 + TTL).is_none(), "expired");
        assert!(c.get(4, t0 + TTL).is_some());
    }

    #[test]
    fn an_entry_lives_its_ttl_across_rotations() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = VerdictCache::new(1000);
        // One insert a second: generations rotate every 32 s.
        for s in 0..200u64 {
            let now = t0 + Duration::from_secs(s);
            c.insert(s, 0, Verdict::shared_forward(), now);
            for back in 0..40u64.min(s + 1) {
                let found = c.get(s - back, now).is_some();
                assert_eq!(found, back < 32, "entry {} at second {s}", s - back);
            }
            assert!(c.len() <= 64 + 1, "{}", c.len());
        }
    }
}
