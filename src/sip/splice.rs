//! Splicing: the output is the original bytes with a few ranges replaced, so header order,
//! case, compact forms, signatures (Identity) and bodies pass through byte for byte.

use std::ops::Range;

/// A set of non-overlapping edits on one message. Inserted text lives in one scratch
/// buffer, allocated with the first text, and the edits (a forward makes three to six) in
/// place, so building them allocates at most once.
#[derive(Debug, Default)]
pub struct Splice {
    edits: smallvec::SmallVec<[(Range<usize>, Range<usize>); 8]>,
    scratch: Vec<u8>,
}

impl Splice {
    pub fn new() -> Self {
        Splice { edits: smallvec::SmallVec::new(), scratch: Vec::new() }
    }

    /// Replace `at` (may be empty: a pure insert) with `text`.
    pub fn replace(&mut self, at: Range<usize>, text: &[u8]) {
        self.replace_with(at, |out| out.extend_from_slice(text));
    }

    /// Replace `at` with the text `write` appends to the buffer it is given (written in
    /// place, with no buffer of its own).
    pub fn replace_with(&mut self, at: Range<usize>, write: impl FnOnce(&mut Vec<u8>)) {
        if self.scratch.capacity() == 0 {
            self.scratch.reserve(256);
        }
        let s = self.scratch.len();
        write(&mut self.scratch);
        self.edits.push((at, s..self.scratch.len()));
    }

    pub fn insert_with(&mut self, at: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.replace_with(at..at, write);
    }

    pub fn insert(&mut self, at: usize, text: &[u8]) {
        self.replace(at..at, text);
    }

    pub fn delete(&mut self, r: Range<usize>) {
        // No text, so no scratch buffer: a relayed response only deletes.
        let s = self.scratch.len();
        self.edits.push((r, s..s));
    }

    /// Apply to `src`. Edits are applied in position order (stable for equal positions, so
    /// inserts at one point keep the order they were added in).
    pub fn apply(self, src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.apply_into(&mut out, src);
        out
    }

    /// `apply`, appending to `out`.
    pub fn apply_into(mut self, out: &mut Vec<u8>, src: &[u8]) {
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        let extra: usize = self.edits.iter().map(|(_, t)| t.len()).sum();
        out.reserve(src.len() + extra);
        let mut pos = 0;
        for (r, t) in &self.edits {
            let start = r.start.clamp(pos, src.len());
            out.extend_from_slice(src.get(pos..start).unwrap_or_default());
            out.extend_from_slice(self.scratch.get(t.clone()).unwrap_or_default());
            pos = r.end.clamp(start, src.len());
        }
        out.extend_from_slice(src.get(pos..).unwrap_or_default());
    }
}

/// Append `v` as `digits` lower-case hex digits (no formatting machinery on the hot path).
pub fn push_hex(out: &mut Vec<u8>, v: u64, digits: u32) {
    let mut buf = [0u8; 16];
    let n = buf.len().min(digits as usize);
    for (i, c) in buf[..n].iter_mut().enumerate() {
        *c = b"0123456789abcdef"[((v >> ((n - 1 - i) * 4)) & 0xf) as usize];
    }
    out.extend_from_slice(&buf[..n]);
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
