//! Splicing: the output is the original bytes with a few ranges replaced, so header order,
//! case, compact forms, signatures (Identity) and bodies pass through byte for byte.

use std::ops::Range;

/// A set of non-overlapping edits on one message. Inserted text lives in one scratch
/// buffer, so building the edits allocates at most twice.
#[derive(Debug, Default)]
pub struct Splice {
    edits: Vec<(Range<usize>, Range<usize>)>,
    scratch: Vec<u8>,
}

impl Splice {
    pub fn new() -> Self {
        Splice { edits: Vec::with_capacity(8), scratch: Vec::with_capacity(256) }
    }

    /// Replace `at` (may be empty: a pure insert) with the text written by `f`.
    pub fn replace(&mut self, at: Range<usize>, text: &[u8]) {
        let s = self.scratch.len();
        self.scratch.extend_from_slice(text);
        self.edits.push((at, s..self.scratch.len()));
    }

    pub fn insert(&mut self, at: usize, text: &[u8]) {
        self.replace(at..at, text);
    }

    pub fn delete(&mut self, r: Range<usize>) {
        self.replace(r, b"");
    }

    /// Apply to `src`. Edits are applied in position order (stable for equal positions, so
    /// inserts at one point keep the order they were added in).
    pub fn apply(mut self, src: &[u8]) -> Vec<u8> {
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        let extra: usize = self.edits.iter().map(|(_, t)| t.len()).sum();
        let mut out = Vec::with_capacity(src.len() + extra);
        let mut pos = 0;
        for (r, t) in &self.edits {
            let start = r.start.clamp(pos, src.len());
            out.extend_from_slice(src.get(pos..start).unwrap_or_default());
            out.extend_from_slice(self.scratch.get(t.clone()).unwrap_or_default());
            pos = r.end.clamp(start, src.len());
        }
        out.extend_from_slice(src.get(pos..).unwrap_or_default());
        out
    }
}

/// Append `v` as `digits` lower-case hex digits (no formatting machinery on the hot path).
pub fn push_hex(out: &mut Vec<u8>, v: u64, digits: u32) {
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// Append `v` in decimal.
pub fn push_dec(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_order() {
        let mut s = Splice::new();
        s.insert(5, b"X");
        s.replace(0..1, b"h");
        s.delete(6..7);
        s.insert(5, b"Y");
        assert_eq!(s.apply(b"Hello World"), b"helloXY orld");
    }

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        push_hex(&mut v, 0xab, 4);
        v.push(b' ');
        push_dec(&mut v, 0);
        v.push(b' ');
        push_dec(&mut v, u64::MAX);
        assert_eq!(v, b"00ab 0 18446744073709551615");
    }

    #[test]
    fn out_of_range_edits_do_not_panic() {
        let mut s = Splice::new();
        s.replace(3..100, b"!");
        s.insert(200, b"?");
        assert_eq!(s.apply(b"abcdef"), b"abc!?");
    }
}
