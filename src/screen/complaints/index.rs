//! The index of recent forwarded calls that complaints are attributed by: one fixed-size
//! 48-byte entry per call (time, caller, callee, keyed Call-ID hash, source address,
//! account, verdict, rule, attestation), in arrival order, bounded by `max_index_entries`
//! and expired after `index_days`. Fed by the shell for every forwarded screening decision;
//! read only when a complaint arrives (rare), so look-ups scan rather than keep a second map.
use crate::screen::stir::Attestation;
use crate::screen::{Decision, Rule, Verdict};
use siphasher::sip::SipHasher13;
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes one forwarded call costs in the index (and in its file).
pub const ENTRY_BYTES: usize = 48;
/// Account number of a call without an account (unknown accounts forwarded).
const NO_ACCOUNT: u16 = u16::MAX;
/// Calls screened at once may be recorded a little out of time order (a call that waited for
/// a certificate or the cluster store): look-ups by time widen their scan by this much.
const DISORDER: u32 = 300;

/// One forwarded call. `flags`: bits 0-1 attestation (0 none, 1 A, 2 B, 3 C), bit 2
/// would_reject (report mode), bit 3 the source is IPv4 (stored mapped in `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub caller: u64,
    pub callee: u64,
    pub call_id: u64,
    pub source: [u8; 16],
    pub time: u32,
    pub account: u16,
    pub flags: u8,
    /// `Rule` position + 1 (report mode: the rule that would have rejected); 0: none.
    pub rule: u8,
}

impl Entry {
    pub fn to_bytes(&self) -> [u8; ENTRY_BYTES] {
        let mut b = [0u8; ENTRY_BYTES];
        b[0..8].copy_from_slice(&self.caller.to_le_bytes());
        b[8..16].copy_from_slice(&self.callee.to_le_bytes());
        b[16..24].copy_from_slice(&self.call_id.to_le_bytes());
        b[24..40].copy_from_slice(&self.source);
        b[40..44].copy_from_slice(&self.time.to_le_bytes());
        b[44..46].copy_from_slice(&self.account.to_le_bytes());
        b[46] = self.flags;
        b[47] = self.rule;
        b
    }

    pub fn from_bytes(b: &[u8; ENTRY_BYTES]) -> Entry {
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        let mut source = [0u8; 16];
        source.copy_from_slice(&b[24..40]);
        Entry {
            caller: u64_at(0),
            callee: u64_at(8),
            call_id: u64_at(16),
            source,
            time: u32::from_le_bytes([b[40], b[41], b[42], b[43]]),
            account: u16::from_le_bytes([b[44], b[45]]),
            flags: b[46],
            rule: b[47],
        }
    }

    pub fn source_ip(&self) -> Option<IpAddr> {
        if self.source == [0; 16] {
            return None;
        }
        let v6 = std::net::Ipv6Addr::from(self.source);
        Some(if self.flags & 8 != 0 { v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4) } else { IpAddr::V6(v6) })
    }

    pub fn attestation(&self) -> Option<Attestation> {
        match self.flags & 3 {
            1 => Some(Attestation::A),
            2 => Some(Attestation::B),
            3 => Some(Attestation::C),
            _ => None,
        }
    }

    pub fn would_reject(&self) -> bool {
        self.flags & 4 != 0
    }

    pub fn rule(&self) -> Option<Rule> {
        Rule::ALL.get(usize::from(self.rule).checked_sub(1)?).copied()
    }

    pub fn unix_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::from(self.time))
    }
}

/// Seconds since 1970 as stored (u32 lasts until 2106).
pub fn unix32(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// A call found for a complaint: its entry and account name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub entry: Entry,
    pub account: Option<Arc<str>>,
}

struct Inner {
    entries: VecDeque<Entry>,
    /// Account names by number; numbers are never reused while the index lives.
    names: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u16>,
    /// Recorded but not yet handed to the file writer (`take_pending`).
    pending: Vec<Entry>,
    names_changed: bool,
    persist: bool,
    max: usize,
    keep: Duration,
}

/// The index; shared by the shell (records) and the complaint desk (looks up).
pub struct Index {
    key: (u64, u64),
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("entries", &self.len()).finish()
    }
}

impl Index {
    /// An empty index keyed with `key` (the Call-ID hash key: random, kept with the file).
    /// `persist`: keep what is recorded for `take_pending`.
    pub fn new(key: (u64, u64), max: usize, keep: Duration, persist: bool) -> Index {
        Index {
            key,
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                names: Vec::new(),
                numbers: HashMap::new(),
                pending: Vec::new(),
                names_changed: false,
                persist,
                max: max.max(1),
                keep,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn key(&self) -> (u64, u64) {
        self.key
    }

    /// A new bound and lifetime (a reload).
    pub fn set_limits(&self, max: usize, keep: Duration) {
        let mut g = self.lock();
        g.max = max.max(1);
        g.keep = keep;
        while g.entries.len() > g.max {
            g.entries.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keyed hash of a Call-ID: a caller cannot make two Call-IDs collide on purpose.
    pub fn hash_call_id(&self, call_id: &str) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write(call_id.trim().as_bytes());
        h.finish()
    }

    /// The entry of a screening decision, when the call was forwarded (or only would have
    /// been rejected); None for a reject.
    pub fn entry_of(&self, time: SystemTime, call_id: &str, source: Option<IpAddr>, d: &Decision) -> Option<Entry> {
        if !matches!(&*d.verdict, Verdict::Forward { .. }) {
            return None;
        }
        let account = match &d.account {
            Some(a) => self.number_of(a)?,
            None => NO_ACCOUNT,
        };
        let mut flags = match d.stir.as_ref().and_then(|r| r.attestation) {
            Some(Attestation::A) => 1,
            Some(Attestation::B) => 2,
            Some(Attestation::C) => 3,
            None => 0,
        };
        if d.would_reject {
            flags |= 4;
        }
        let source = match source {
            Some(IpAddr::V4(v4)) => {
                flags |= 8;
                v4.to_ipv6_mapped().octets()
            }
            Some(IpAddr::V6(v6)) => v6.octets(),
            None => [0; 16],
        };
        let rule = d.rule.and_then(|r| Rule::ALL.iter().position(|x| *x == r)).map_or(0, |i| (i + 1) as u8);
        Some(Entry {
            caller: d.caller.unwrap_or(0),
            callee: d.callee.unwrap_or(0),
            call_id: self.hash_call_id(call_id),
            source,
            time: unix32(time),
            account,
            flags,
            rule,
        })
    }

    /// The number of an account name, given one on first sight; None when the table is
    /// full (65 535 names: accounts come from the config).
    fn number_of(&self, name: &Arc<str>) -> Option<u16> {
        let mut g = self.lock();
        if let Some(n) = g.numbers.get(name) {
            return Some(*n);
        }
        let n = u16::try_from(g.names.len()).ok().filter(|n| *n != NO_ACCOUNT)?;
        g.names.push(name.clone());
        g.numbers.insert(name.clone(), n);
        g.names_changed = true;
        Some(n)
    }

    /// Record a forwarded call at `now`: expired entries go first, then the oldest while
    /// the index is full.
    pub fn record(&self, e: Entry, now: SystemTime) {
        let mut g = self.lock();
        let oldest = unix32(now).saturating_sub(u32::try_from(g.keep.as_secs()).unwrap_or(u32::MAX));
        while g.entries.front().is_some_and(|f| f.time < oldest) {
            g.entries.pop_front();
        }
        while g.entries.len() >= g.max {
            g.entries.pop_front();
        }
        g.entries.push_back(e);
        if g.persist {
            g.pending.push(e);
        }
    }

    /// Entries and names restored from the index file (entries in file order).
    pub fn restore(&self, names: Vec<Arc<str>>, entries: impl IntoIterator<Item = Entry>, now: SystemTime) {
        let mut g = self.lock();
        g.numbers = names.iter().enumerate().filter_map(|(i, n)| Some((n.clone(), u16::try_from(i).ok()?))).collect();
        g.names = names;
        let oldest = unix32(now).saturating_sub(u32::try_from(g.keep.as_secs()).unwrap_or(u32::MAX));
        g.entries = entries.into_iter().filter(|e| e.time >= oldest).collect();
        while g.entries.len() > g.max {
            g.entries.pop_front();
        }
    }

    /// What was recorded since the last call, and the account names when they changed.
    pub fn take_pending(&self) -> (Vec<Entry>, Option<Vec<Arc<str>>>) {
        let mut g = self.lock();
        let names = std::mem::take(&mut g.names_changed).then(|| g.names.clone());
        (std::mem::take(&mut g.pending), names)
    }

    /// Everything held now (for rewriting the file compacted).
    pub fn snapshot(&self) -> (Vec<Entry>, Vec<Arc<str>>) {
        let g = self.lock();
        (g.entries.iter().copied().collect(), g.names.clone())
    }

    fn found(g: &Inner, e: &Entry) -> Found {
        Found { entry: *e, account: g.names.get(usize::from(e.account)).cloned() }
    }

    /// The newest call with this Call-ID.
    pub fn by_call_id(&self, call_id: &str) -> Option<Found> {
        let h = self.hash_call_id(call_id);
        let g = self.lock();
        g.entries.iter().rev().find(|e| e.call_id == h).map(|e| Self::found(&g, e))
    }

    /// The call from `caller` to `callee` closest to `time` within `window`. `callee` is a
    /// whole number, or with `area` a leading part of one (`1212`: any +1 212 number).
    pub fn matching(&self, caller: u64, callee: Callee, time: SystemTime, window: Duration) -> Option<Found> {
        let t = unix32(time);
        let w = u32::try_from(window.as_secs()).unwrap_or(u32::MAX);
        let g = self.lock();
        let from = g.entries.partition_point(|e| e.time < t.saturating_sub(w).saturating_sub(DISORDER));
        let mut best: Option<(u32, &Entry)> = None;
        for e in g.entries.range(from..) {
            if e.time > t.saturating_add(w).saturating_add(DISORDER) {
                break;
            }
            let gap = e.time.abs_diff(t);
            if gap > w || e.caller != caller || !callee.matches(e.callee) {
                continue;
            }
            if best.is_none_or(|(b, _)| gap <= b) {
                best = Some((gap, e));
            }
        }
        best.map(|(_, e)| Self::found(&g, e))
    }
}

/// The callee a complaint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callee {
    Number(u64),
    /// The leading digits only (the FTC gives the consumer's area code): `1212`.
    Prefix(u64),
}

impl Callee {
    pub fn matches(self, n: u64) -> bool {
        match self {
            Callee::Number(c) => c == n,
            Callee::Prefix(0) => false,
            Callee::Prefix(p) => {
                let (pd, nd) = (crate::screen::number::digit_count(p), crate::screen::number::digit_count(n));
                nd > pd && n / 10u64.pow(nd - pd) == p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::Verdict;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn forwarded(account: &str, caller: u64, callee: u64) -> Decision {
        Decision { account: Some(account.into()), caller: Some(caller), callee: Some(callee), ..Decision::pass() }
    }

    fn index(max: usize) -> Index {
        Index::new((1, 2), max, Duration::from_secs(7 * 86_400), true)
    }

    #[test]
    fn an_entry_is_48_bytes_and_round_trips() {
        let i = index(10);
        let mut d = forwarded("acme", 12125550100, 13125550199);
        d.would_reject = true;
        d.rule = Some(Rule::Hours);
        let e = i.entry_of(at(1_800_000_000), "abc@host", Some("192.0.2.7".parse().unwrap()), &d).unwrap();
        assert_eq!(std::mem::size_of::<Entry>(), ENTRY_BYTES);
        assert_eq!(Entry::from_bytes(&e.to_bytes()), e);
        assert_eq!(e.source_ip(), Some("192.0.2.7".parse().unwrap()));
        assert_eq!((e.rule(), e.would_reject(), e.attestation()), (Some(Rule::Hours), true, None));
        let v6 = i.entry_of(at(1), "x", Some("2001:db8::1".parse().unwrap()), &d).unwrap();
        assert_eq!(v6.source_ip(), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn rejects_are_not_indexed() {
        let i = index(10);
        let mut d = forwarded("acme", 1, 2);
        d.verdict = std::sync::Arc::new(Verdict::Reject { code: 403, reason: String::new(), headers: vec![] });
        assert!(i.entry_of(at(1), "x", None, &d).is_none());
    }

    #[test]
    fn call_id_lookup_is_keyed_and_newest_first() {
        let i = index(10);
        let other = Index::new((3, 4), 10, Duration::from_secs(86_400), false);
        assert_ne!(i.hash_call_id("abc"), other.hash_call_id("abc"), "the key changes the hash");
        i.record(i.entry_of(at(100), "abc", None, &forwarded("acme", 1, 2)).unwrap(), at(100));
        i.record(i.entry_of(at(200), "abc", None, &forwarded("beta", 1, 2)).unwrap(), at(200));
        assert_eq!(i.by_call_id("abc").unwrap().account.as_deref(), Some("beta"));
        assert!(i.by_call_id("abd").is_none());
    }

    #[test]
    fn matching_takes_the_closest_call_within_the_window() {
        let i = index(100);
        let w = Duration::from_secs(600);
        for (t, acct) in [(1000, "a"), (1500, "b"), (2500, "c")] {
            i.record(i.entry_of(at(t), "x", None, &forwarded(acct, 12125550100, 13125550199)).unwrap(), at(t));
        }
        let m = |t, callee| i.matching(12125550100, callee, at(t), w).and_then(|f| f.account);
        assert_eq!(m(1400, Callee::Number(13125550199)).as_deref(), Some("b"));
        assert_eq!(m(1100, Callee::Number(13125550199)).as_deref(), Some("a"));
        assert_eq!(m(2000, Callee::Number(13125550199)).as_deref(), Some("c"), "both 500 s off: the later");
        assert_eq!(m(4000, Callee::Number(13125550199)), None, "out of the window");
        assert_eq!(m(1400, Callee::Number(13125550198)), None, "another callee");
        assert_eq!(m(1400, Callee::Prefix(1312)).as_deref(), Some("b"), "by area code");
        assert_eq!(m(1400, Callee::Prefix(1212)), None);
    }

    #[test]
    fn bounded_and_expiring() {
        let i = index(1000);
        for n in 0..5000u64 {
            i.record(i.entry_of(at(n), "x", None, &forwarded("a", n, 2)).unwrap(), at(n));
        }
        assert_eq!(i.len(), 1000);
        let later = at(5000 + 7 * 86_400 + 1);
        i.record(i.entry_of(later, "y", None, &forwarded("a", 9, 2)).unwrap(), later);
        assert_eq!(i.len(), 1, "a week later only the new call is left");
        // Many account names from a huge config: numbers run out, the calls are not indexed.
        let j = index(10);
        for n in 0..70_000u32 {
            let _ = j.entry_of(at(1), "x", None, &forwarded(&format!("acct{n}"), 1, 2));
        }
        assert!(j.entry_of(at(1), "x", None, &forwarded("one-more", 1, 2)).is_none());
    }
}

#[cfg(test)]
mod figures {
    use super::*;
    use std::time::Instant;

    /// The index's costs at its default bound: `cargo test --release --lib
    /// complaints::index::figures -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn record_and_look_up_two_million_calls() {
        let n = 2_000_000u64;
        let i = Index::new((1, 2), n as usize, Duration::from_secs(7 * 86_400), false);
        let d = Decision { account: Some("acme".into()), caller: Some(12125550100), ..Decision::pass() };
        let t0 = Instant::now();
        for k in 0..n {
            let mut d = d.clone();
            d.callee = Some(13120000000 + k);
            let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000 + k / 10);
            let e = i.entry_of(t, &format!("call-{k}@host"), Some("192.0.2.1".parse().unwrap()), &d).unwrap();
            i.record(e, t);
        }
        let per_call = t0.elapsed() / n as u32;
        let t1 = Instant::now();
        assert!(i.by_call_id("call-7@host").is_some());
        let by_call_id = t1.elapsed();
        let t2 = Instant::now();
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 100_000);
        assert!(
            i.matching(12125550100, Callee::Number(13120000000 + 1_000_000), t, Duration::from_secs(600)).is_some()
        );
        let matching = t2.elapsed();
        println!(
            "{n} calls: {} MB of entries, record {per_call:?}/call (incl. formatting the Call-ID), \
             Call-ID look-up (full scan) {by_call_id:?}, caller/callee/time look-up {matching:?}",
            n as usize * ENTRY_BYTES / 1_000_000
        );
    }
}
