//! Hash maps keyed by E.164 numbers (`u64`). The keys come from the network (callees chosen by
//! the caller), so the hash is seeded per map to keep collision floods impractical, but it is a
//! single folded multiply: SipHash would cost more than the rest of a lookup.
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A seeded multiply-fold hasher for integer keys.
#[derive(Clone, Copy, Debug)]
pub struct NumberHasherBuilder {
    seed: u64,
}

impl Default for NumberHasherBuilder {
    fn default() -> Self {
        // std's RandomState draws a per-process random key; hashing a constant with it yields a
        // random seed without another dependency.
        NumberHasherBuilder { seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) }
    }
}

impl BuildHasher for NumberHasherBuilder {
    type Hasher = NumberHasher;
    fn build_hasher(&self) -> NumberHasher {
        NumberHasher { state: self.seed }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct NumberHasher {
    state: u64,
}

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;

fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for NumberHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only integer keys are expected; keep a correct (if slower) path for anything else.
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.state = fold_mul(self.state ^ n, MUL);
    }
    fn finish(&self) -> u64 {
        fold_mul(self.state, MUL ^ 0xff51_afd7_ed55_8ccd)
    }
}

pub type NumberMap<V> = HashMap<u64, V, NumberHasherBuilder>;
pub type NumberSet = HashSet<u64, NumberHasherBuilder>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_work_and_spread_keys() {
        let mut m: NumberMap<u32> = NumberMap::default();
        for n in 0..10_000u64 {
            *m.entry(12_125_550_000 + n).or_default() += 1;
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get(&12_125_550_100), Some(&1));
        let b = NumberHasherBuilder::default();
        // Consecutive numbers must not collide in the low bits hashbrown uses for buckets.
        let low: std::collections::HashSet<u64> = (0..1024u64).map(|n| b.hash_one(n) & 0x3ff).collect();
        assert!(low.len() > 600, "{}", low.len());
    }
}
