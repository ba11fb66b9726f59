//! The compact exact set of E.164 numbers: partitioned Elias-Fano over sorted `u64`s, read in
//! place from bytes (an mmap'd snapshot or an in-memory image).
//!
//! Why this structure: Elias-Fano stores n sorted values from a universe u in about
//! `2 + log2(u/n)` bits each with no false positives. A national list is dense in its own
//! country's range (255M US numbers over the ~6.4e9 NANP numbers: ~7 bits each), but a
//! single Elias-Fano over every country would pay for the whole span between the smallest
//! and largest number. Partitioning into chunks of `CHUNK` consecutive values, each with its
//! own low-bit width, adapts to local density and bounds a lookup to one chunk. Unlike
//! `vers_vecs::EliasFanoVec`, which is built in memory from the values, this layout is a
//! flat array of little-endian words that a snapshot holds as is, so loading is a checksum
//! pass rather than a rebuild. Measured at 254.8M US numbers (bench/dnc_scale.sh,
//! BENCHMARKS.md): 0.861 bytes/number (vers-vecs: 0.884) and 375-389 ns CPU per random
//! lookup (vers-vecs: 403-424 ns) on a shared 2-core VM.
//!
//! Layout: `heads` holds per chunk two words, its smallest value and
//! `word_offset << 8 | low_bits` (adjacent, so one cache line serves both), and `data` holds
//! per chunk its packed low bits followed by the unary upper-bits vector. A `Directory`
//! built at load maps the high bits of a number to a few candidate chunks, so a lookup
//! binary-searches a handful of adjacent heads instead of all of them.
//! Reads go through `word()`, which yields 0 past the end, so no input can make a lookup
//! panic; `validate` rejects inconsistent layouts when a snapshot is opened.

/// Values per chunk: a lookup scans at most ~2*CHUNK/64 words of one chunk's upper bits.
pub const CHUNK: usize = 512;

/// The two word arrays of an encoded set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub heads: Vec<u64>,
    pub data: Vec<u64>,
}

/// Encode strictly increasing values.
pub fn encode(sorted: &[u64]) -> Encoded {
    let mut out = Encoded::default();
    for chunk in sorted.chunks(CHUNK) {
        let (Some(&base), Some(&last)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        let n = chunk.len() as u64;
        let span = last - base;
        let low_bits = (span / n).checked_ilog2().unwrap_or(0);
        out.heads.push(base);
        out.heads.push(((out.data.len() as u64) << 8) | u64::from(low_bits));
        let mask = low_mask(low_bits);
        let low_words = (chunk.len() * low_bits as usize).div_ceil(64);
        let upper_bits = (span >> low_bits) as usize + chunk.len();
        // Indexing below is in bounds by construction: the chunk's words are sized here.
        let start = out.data.len();
        out.data.resize(start + low_words + upper_bits.div_ceil(64), 0);
        let (low, upper) = out.data[start..].split_at_mut(low_words);
        for (i, &v) in chunk.iter().enumerate() {
            let y = v - base;
            put_bits(low, i * low_bits as usize, low_bits, y & mask);
            let pos = (y >> low_bits) as usize + i;
            upper[pos / 64] |= 1 << (pos % 64);
        }
    }
    out
}

fn low_mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

fn put_bits(words: &mut [u64], at: usize, bits: u32, v: u64) {
    if bits == 0 {
        return;
    }
    let (w, s) = (at / 64, at % 64);
    words[w] |= v << s;
    if s + bits as usize > 64 {
        words[w + 1] |= v >> (64 - s);
    }
}

/// Little-endian word `i` of `b`, 0 past the end.
#[inline]
pub fn word(b: &[u8], i: usize) -> u64 {
    i.checked_mul(8)
        .and_then(|s| b.get(s..s.checked_add(8)?))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Maps `(x - min) >> shift` to the range of chunks whose heads can hold x.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    min: u64,
    shift: u32,
    /// `starts[b]`: number of chunks whose first value is below bucket b's start.
    starts: Vec<u32>,
}

impl Directory {
    /// One bucket per 8-16 chunks: small enough to stay in the L2 cache (0.5 MB at 255M
    /// numbers), and the binary search within a bucket reads a few adjacent heads. Measured
    /// at 255M numbers: 2 buckets per chunk 510 ns, 1 per 2-4 chunks 410 ns, 1 per 8-16
    /// chunks 380 ns, 1 per 32-64 chunks 440 ns (CPU time per random lookup).
    pub fn build(heads: &[u8]) -> Directory {
        let chunks = heads.len() / 16;
        let first = |c: usize| word(heads, 2 * c);
        if chunks == 0 {
            return Directory::default();
        }
        let min = first(0);
        let range = first(chunks - 1).saturating_sub(min);
        let mut shift = 0;
        // Bounded: a corrupt snapshot's heads may span all of u64 (a shift of 64 would wrap).
        while shift < 63 && (range >> shift) >= (chunks as u64 / 8).max(1) {
            shift += 1;
        }
        let buckets = (range >> shift) as usize + 1;
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut c = 0usize;
        for b in 0..=buckets as u64 {
            while c < chunks && (first(c).saturating_sub(min)) >> shift < b {
                c += 1;
            }
            starts.push(c as u32);
        }
        Directory { min, shift, starts }
    }

    /// Chunks `lo..hi` such that the last chunk with first <= x is in `lo-1..hi`.
    fn range(&self, x: u64, chunks: usize) -> (usize, usize) {
        let b = usize::try_from(x.saturating_sub(self.min) >> self.shift).unwrap_or(usize::MAX);
        let at = |i: usize| self.starts.get(i).map_or(chunks, |&v| v as usize);
        (at(b), at(b.saturating_add(1)))
    }
}

/// A read-only view of an encoded set over its byte regions.
#[derive(Debug, Clone, Copy)]
pub struct SetView<'a> {
    pub heads: &'a [u8],
    pub data: &'a [u8],
    pub count: u64,
    pub dir: &'a Directory,
}

impl SetView<'_> {
    fn chunks(&self) -> usize {
        self.heads.len() / 16
    }

    fn first(&self, c: usize) -> u64 {
        word(self.heads, 2 * c)
    }

    fn meta(&self, c: usize) -> u64 {
        word(self.heads, 2 * c + 1)
    }

    /// Values in chunk c.
    fn chunk_len(&self, c: usize) -> usize {
        let before = c.saturating_mul(CHUNK) as u64;
        self.count.saturating_sub(before).min(CHUNK as u64) as usize
    }

    /// Word range of chunk c in `data`, and its low-bit width.
    fn chunk_words(&self, c: usize) -> (usize, usize, u32) {
        let m = self.meta(c);
        let end = if c + 1 < self.chunks() { self.meta(c + 1) >> 8 } else { (self.data.len() / 8) as u64 };
        ((m >> 8) as usize, end as usize, (m & 0xff) as u32)
    }

    pub fn contains(&self, x: u64) -> bool {
        if self.chunks() == 0 || x < self.first(0) {
            return false;
        }
        // Last chunk whose first value is <= x, between the directory's bounds.
        let (mut lo, mut hi) = self.dir.range(x, self.chunks());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.first(mid) <= x { lo = mid + 1 } else { hi = mid }
        }
        let Some(c) = lo.checked_sub(1) else {
            return false;
        };
        let y = x - self.first(c);
        let n = self.chunk_len(c);
        let (off, end, low_bits) = self.chunk_words(c);
        if low_bits >= 64 {
            return false;
        }
        let upper_start = off + (n * low_bits as usize).div_ceil(64);
        let (high, want_low) = (y >> low_bits, y & low_mask(low_bits));
        let Some(mut pos) = self.after_zeros(upper_start, end, high) else {
            return false;
        };
        // Values with this high part are the ones (set bits) from `pos` on; `pos - high`
        // ones precede them.
        let mut i = pos - high as usize;
        while i < n && self.bit(upper_start, pos) {
            let low = self.read_bits(off, i * low_bits as usize, low_bits);
            if low >= want_low {
                return low == want_low;
            }
            pos += 1;
            i += 1;
        }
        false
    }

    fn bit(&self, start: usize, pos: usize) -> bool {
        word(self.data, start + pos / 64) >> (pos % 64) & 1 == 1
    }

    fn read_bits(&self, start: usize, at: usize, bits: u32) -> u64 {
        if bits == 0 {
            return 0;
        }
        let (w, s) = (start + at / 64, at % 64);
        let mut v = word(self.data, w) >> s;
        if s + bits as usize > 64 {
            v |= word(self.data, w + 1) << (64 - s);
        }
        v & low_mask(bits)
    }

    /// Bit position just after the `k`-th zero of the upper vector in words `start..end`
    /// (0 when k = 0), or None when it has fewer zeros.
    fn after_zeros(&self, start: usize, end: usize, k: u64) -> Option<usize> {
        if k == 0 {
            return Some(0);
        }
        let mut left = k;
        for w in start..end {
            let zeros = !word(self.data, w);
            let z = u64::from(zeros.count_ones());
            if z >= left {
                let mut bits = zeros;
                for _ in 1..left {
                    bits &= bits - 1;
                }
                return Some((w - start) * 64 + bits.trailing_zeros() as usize + 1);
            }
            left -= z;
        }
        None
    }

    /// All values in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.chunks()).flat_map(move |c| self.chunk_values(c))
    }

    /// The values of chunk c in stored order, one step per set upper bit (not per bit).
    /// Values that a corrupt chunk would decode past `u64::MAX` are skipped.
    fn chunk_values(&self, c: usize) -> impl Iterator<Item = u64> + '_ {
        let base = self.first(c);
        let n = self.chunk_len(c);
        let (off, end, low_bits) = self.chunk_words(c);
        let upper_start = off + (n * low_bits as usize).div_ceil(64);
        let mut w = upper_start;
        let mut bits = if w < end { word(self.data, w) } else { 0 };
        let mut i = 0usize;
        std::iter::from_fn(move || {
            loop {
                if i >= n || low_bits >= 64 {
                    return None;
                }
                while bits == 0 {
                    w += 1;
                    if w >= end {
                        return None;
                    }
                    bits = word(self.data, w);
                }
                let pos = (w - upper_start) * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let high = (pos - i) as u64;
                let low = self.read_bits(off, i * low_bits as usize, low_bits);
                i += 1;
                let v = u128::from(base) + ((u128::from(high) << low_bits) | u128::from(low));
                if let Ok(v) = u64::try_from(v) {
                    return Some(v);
                }
            }
        })
    }

    /// Check the layout is self-consistent, so that lookups see what was written.
    pub fn validate(&self) -> Result<(), String> {
        let chunks = self.chunks();
        if !self.heads.len().is_multiple_of(16) {
            return Err("chunk heads are not whole".into());
        }
        if self.count > (chunks as u64).saturating_mul(CHUNK as u64)
            || (chunks > 0 && self.count <= (chunks as u64 - 1) * CHUNK as u64)
        {
            return Err(format!("{} numbers do not fit {chunks} chunks", self.count));
        }
        let words = self.data.len() / 8;
        let mut prev_first = None;
        let mut prev_end = 0usize;
        for c in 0..chunks {
            let first = self.first(c);
            if prev_first.is_some_and(|p| p >= first) {
                return Err(format!("chunk {c} is out of order"));
            }
            prev_first = Some(first);
            let (off, end, low_bits) = self.chunk_words(c);
            let low_words = (self.chunk_len(c) * low_bits as usize).div_ceil(64);
            if low_bits > 63 || off != prev_end || end > words || off + low_words > end {
                return Err(format!("chunk {c} has a bad layout"));
            }
            // One set upper bit per value: a lookup then never runs past its chunk.
            let ones: u64 = (off + low_words..end).map(|w| u64::from(word(self.data, w).count_ones())).sum();
            if ones != self.chunk_len(c) as u64 {
                return Err(format!("chunk {c} holds {ones} values, expected {}", self.chunk_len(c)));
            }
            prev_end = end;
        }
        if prev_end != words {
            return Err("data words left over".into());
        }
        self.validate_order()
    }

    /// Values as `contains` assumes them: each chunk starts at its head's value, rises
    /// strictly, decodes within u64 and ends below the next chunk's head. Without this a
    /// crafted snapshot could list numbers that lookups never find. One decode pass: about
    /// as costly as the checksum pass a load already makes.
    fn validate_order(&self) -> Result<(), String> {
        for c in 0..self.chunks() {
            let mut prev: Option<u64> = None;
            let mut seen = 0usize;
            for v in self.chunk_values(c) {
                match prev {
                    None if v != self.first(c) => return Err(format!("chunk {c} does not start at its head")),
                    Some(p) if p >= v => return Err(format!("chunk {c} is not strictly increasing")),
                    _ => {}
                }
                prev = Some(v);
                seen += 1;
            }
            if seen != self.chunk_len(c) {
                return Err(format!("chunk {c} decodes past the largest number"));
            }
            if let Some(last) = prev
                && c + 1 < self.chunks()
                && last >= self.first(c + 1)
            {
                return Err(format!("chunk {c} overlaps chunk {}", c + 1));
            }
        }
        Ok(())
    }
}

/// Serialise words little-endian.
pub fn to_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::dnc::testutil::Rng;
    use std::collections::HashSet;

    struct Owned(Vec<u8>, Vec<u8>, u64, Directory);
    fn build(values: &[u64]) -> Owned {
        let mut v = values.to_vec();
        v.sort_unstable();
        v.dedup();
        let e = encode(&v);
        let heads = to_bytes(&e.heads);
        let dir = Directory::build(&heads);
        Owned(heads, to_bytes(&e.data), v.len() as u64, dir)
    }
    impl Owned {
        fn view(&self) -> SetView<'_> {
            SetView { heads: &self.0, data: &self.1, count: self.2, dir: &self.3 }
        }
    }

    /// Every member is found, every probe agrees with a HashSet, and iteration returns the
    /// sorted distinct input.
    fn check_against_reference(values: &[u64], probes: &[u64]) {
        let set = build(values);
        let view = set.view();
        view.validate().unwrap();
        let reference: HashSet<u64> = values.iter().copied().collect();
        for &v in values {
            assert!(view.contains(v), "member {v} missing");
        }
        for &p in probes {
            assert_eq!(view.contains(p), reference.contains(&p), "probe {p}");
        }
        let mut sorted: Vec<u64> = reference.into_iter().collect();
        sorted.sort_unstable();
        assert_eq!(view.iter().collect::<Vec<_>>(), sorted);
    }

    #[test]
    fn random_dense_us_numbers_match_hashset() {
        let mut rng = Rng(7);
        let values: Vec<u64> = (0..50_000).map(|_| 12_000_000_000 + rng.below(8_000_000_000)).collect();
        let mut probes: Vec<u64> = (0..50_000).map(|_| 12_000_000_000 + rng.below(8_000_000_000)).collect();
        // Neighbours of members are the likeliest to be confused.
        probes.extend(values.iter().take(5000).flat_map(|&v| [v - 1, v + 1]));
        check_against_reference(&values, &probes);
    }

    #[test]
    fn random_sparse_worldwide_numbers_match_hashset() {
        let mut rng = Rng(11);
        let values: Vec<u64> = (0..20_000).map(|_| 1_000_000 + rng.below(999_999_999_000_000)).collect();
        let probes: Vec<u64> = (0..20_000).map(|_| rng.next() % 1_000_000_000_000_000).collect();
        check_against_reference(&values, &probes);
    }

    #[test]
    fn adversarial_shapes_match_hashset() {
        let max = 999_999_999_999_999u64;
        let min = 1_000_000u64;
        let probes = [0, 1, min - 1, min, min + 1, max - 1, max, max + 1, u64::MAX, 12_125_550_100];
        // Extremes in one chunk: the widest possible low-bit width.
        check_against_reference(&[min, max], &probes);
        // A single number, and the empty set.
        check_against_reference(&[max], &probes);
        check_against_reference(&[], &probes);
        // Consecutive runs (low bits 0) straddling chunk boundaries, with duplicates.
        let run: Vec<u64> = (0..3 * CHUNK as u64 + 7).map(|i| 12_125_550_000 + i).collect();
        let mut dup = run.clone();
        dup.extend(&run);
        dup.reverse();
        let near: Vec<u64> = (0..4 * CHUNK as u64).map(|i| 12_125_549_990 + i).collect();
        check_against_reference(&dup, &near);
        // Exactly one full chunk, then one more value far away.
        let mut full: Vec<u64> = (0..CHUNK as u64).map(|i| 442_079_460_000 + 3 * i).collect();
        full.push(max);
        let probes: Vec<u64> = (0..3 * CHUNK as u64 + 3).map(|i| 442_079_459_999 + i).collect();
        check_against_reference(&full, &probes);
        // Clusters far apart mixed in one chunk.
        let mut rng = Rng(3);
        let mixed: Vec<u64> =
            (0..5000)
                .map(|i| {
                    if i % 2 == 0 { 12_000_000_000 + rng.below(1000) } else { 861_380_000_000 + (rng.below(10) << 20) }
                })
                .collect();
        let probes: Vec<u64> = mixed.iter().map(|v| v ^ 1).chain(mixed.iter().copied()).collect();
        check_against_reference(&mixed, &probes);
    }

    #[test]
    fn inconsistent_layout_is_rejected() {
        let set = build(&(0..2000u64).map(|i| 12_000_000_000 + i * 7).collect::<Vec<_>>());
        let mut v = set.view();
        v.count += CHUNK as u64;
        assert!(v.validate().is_err());
        let mut heads = set.0.clone();
        heads[24] ^= 0x40; // chunk 1's offset
        let v = SetView { heads: &heads, ..set.view() };
        assert!(v.validate().is_err());
        let v = SetView { data: &set.1[..set.1.len() - 8], ..set.view() };
        assert!(v.validate().is_err());
    }

    /// Layouts whose word counts add up but whose values break what `contains` assumes
    /// (found by fuzzing: the set listed numbers its lookups did not find).
    #[test]
    fn values_out_of_order_are_rejected() {
        // Chunk 1's head moved below chunk 0's last value: the chunks overlap.
        let set = build(&(0..2000u64).map(|i| 12_000_000_000 + i * 7).collect::<Vec<_>>());
        let mut heads = set.0.clone();
        let last0 = 12_000_000_000 + (CHUNK as u64 - 1) * 7;
        heads[16..24].copy_from_slice(&(last0 - 1).to_le_bytes());
        let dir = Directory::build(&heads);
        let v = SetView { heads: &heads, dir: &dir, ..set.view() };
        let err = v.validate().unwrap_err();
        assert!(err.contains("overlaps"), "{err}");

        // Within a chunk: y = 0, 5, 6, 40 (low_bits 3); value 2's low bits set to 4 makes
        // it 4, below value 1, so a lookup of it would stop at 5 and miss it.
        let set = build(&[12_000_000_000, 12_000_000_005, 12_000_000_006, 12_000_000_040]);
        assert_eq!(word(&set.0, 1) & 0xff, 3);
        let mut data = set.1.clone();
        let w = (word(&data, 0) & !(0b111 << 6)) | (4 << 6);
        data[..8].copy_from_slice(&w.to_le_bytes());
        let v = SetView { data: &data, ..set.view() };
        let err = v.validate().unwrap_err();
        assert!(err.contains("not strictly increasing"), "{err}");

        // The first value's low bits made non-zero: the chunk no longer starts at its head.
        let mut data = set.1.clone();
        data[0] |= 1;
        let v = SetView { data: &data, ..set.view() };
        let err = v.validate().unwrap_err();
        assert!(err.contains("does not start"), "{err}");
    }
}
