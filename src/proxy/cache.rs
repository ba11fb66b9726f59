//! The verdict cache: one screening per INVITE transaction. Keyed by a hash of (top Via
//! branch, Call-ID, CSeq number); bounded in size and entries expire after 32 s (64*T1,
//! the INVITE transaction lifetime), so network data cannot grow it without limit.

use crate::screen::Verdict;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const TTL: Duration = Duration::from_secs(32);

/// Keys are already xxh3 hashes of the transaction: hashing them again would be wasted work.
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

pub struct VerdictCache {
    map: HashMap<u64, (Arc<Verdict>, SystemTime), BuildHasherDefault<KeyHasher>>,
    order: VecDeque<(SystemTime, u64)>,
    cap: usize,
}

impl VerdictCache {
    pub fn new(cap: usize) -> Self {
        VerdictCache {
            map: HashMap::with_capacity_and_hasher(cap.min(1 << 16), BuildHasherDefault::default()),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn get(&self, key: u64, now: SystemTime) -> Option<&Arc<Verdict>> {
        self.map.get(&key).filter(|(_, exp)| *exp > now).map(|(v, _)| v)
    }

    pub fn insert(&mut self, key: u64, verdict: Arc<Verdict>, now: SystemTime) {
        self.expire(now);
        while self.map.len() >= self.cap {
            match self.order.pop_front() {
                Some((_, k)) => {
                    self.map.remove(&k);
                }
                None => break,
            }
        }
        let exp = now + TTL;
        self.map.insert(key, (verdict, exp));
        self.order.push_back((exp, key));
    }

    fn expire(&mut self, now: SystemTime) {
        while let Some(&(exp, k)) = self.order.front() {
            if exp > now {
                break;
            }
            self.order.pop_front();
            // A key re-inserted later has a later expiry; only drop the stale entry.
            if self.map.get(&k).is_some_and(|(_, e)| *e <= now) {
                self.map.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_after_ttl_and_is_bounded() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = VerdictCache::new(2);
        c.insert(1, Verdict::shared_forward(), t0);
        assert!(c.get(1, t0 + Duration::from_secs(31)).is_some());
        assert!(c.get(1, t0 + TTL).is_none());
        c.insert(2, Verdict::shared_forward(), t0);
        c.insert(3, Verdict::shared_forward(), t0);
        assert_eq!(c.len(), 2);
        assert!(c.get(1, t0).is_none(), "oldest evicted at the cap");
        c.insert(4, Verdict::shared_forward(), t0 + TTL);
        assert_eq!(c.len(), 1, "expired entries are dropped on insert");
    }
}
