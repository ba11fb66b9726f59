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
        Splice {
            edits: Vec::with_capacity(8),
            scratch: Vec::with_capacity(256),
        }
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
    fn out_of_range_edits_do_not_panic() {
        let mut s = Splice::new();
        s.replace(3..100, b"!");
        s.insert(200, b"?");
        assert_eq!(s.apply(b"abcdef"), b"abc!?");
    }
}
