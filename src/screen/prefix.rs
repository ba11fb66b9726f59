//! Longest-prefix lookup of E.164 numbers (owned number blocks, time zones by prefix). A
//! number without a leading zero is identified by its value, so a prefix of k digits is the
//! number divided by 10^(len-k): one hash probe per configured prefix length.
use super::hash::NumberMap;
use super::number::digit_count;

#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    map: NumberMap<V>,
    /// Bit k set when some prefix has k digits (1..=15).
    lengths: u16,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap { map: NumberMap::default(), lengths: 0 }
    }
}

impl<V> PrefixMap<V> {
    /// Insert a prefix given as its digits value (no leading zero); returns the old value.
    pub fn insert(&mut self, prefix: u64, value: V) -> Option<V> {
        self.lengths |= 1 << digit_count(prefix);
        self.map.insert(prefix, value)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The value of the longest prefix of `n`.
    pub fn longest(&self, n: u64) -> Option<&V> {
        let len = digit_count(n);
        let mut div = 1u64;
        for k in (1..=len).rev() {
            if self.lengths & (1 << k) != 0
                && let Some(v) = self.map.get(&(n / div))
            {
                return Some(v);
            }
            div *= 10;
        }
        None
    }
}

/// Parse `+DIGITS` (1-15 digits, first not 0) as a prefix value, e.g. `+1212` -> 1212.
pub fn parse_prefix(s: &str) -> Option<u64> {
    let body = s.trim().strip_prefix('+')?;
    if body.is_empty() || body.len() > 15 || body.starts_with('0') || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    body.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut m = PrefixMap::default();
        m.insert(1, "nanp");
        m.insert(1212, "nyc");
        m.insert(1212555, "block");
        assert_eq!(m.longest(12125550100), Some(&"block"));
        assert_eq!(m.longest(12124440100), Some(&"nyc"));
        assert_eq!(m.longest(13105550100), Some(&"nanp"));
        assert_eq!(m.longest(442079460018), None);
        assert_eq!(m.longest(1212), Some(&"nyc"));
    }

    #[test]
    fn prefixes_parse() {
        assert_eq!(parse_prefix("+1212"), Some(1212));
        assert_eq!(parse_prefix(" +44 "), Some(44));
        assert_eq!(parse_prefix("1212"), None);
        assert_eq!(parse_prefix("+0"), None);
        assert_eq!(parse_prefix("+"), None);
        assert_eq!(parse_prefix("+12a"), None);
        assert_eq!(parse_prefix("+1234567890123456"), None);
    }
}
