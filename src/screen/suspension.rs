//! Suspensions: a caller ID or a whole account barred from calling until a given time, by
//! its calling behaviour or by the complaints it collected. Read on every screened call, so
//! the table is swapped whole (a lock-free load, two look-ups); written rarely, under a lock.
//!
//! The table is in memory; every change also goes to a `Journal` (the shell's file under
//! `[state] dir`, see `state::suspensions`), so a restart replays them. A lift remembers when
//! it happened: a suspension replayed later with an earlier `since` (one that a complaints
//! journal derives again at start-up) stays lifted.
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// At most this many suspensions and remembered lifts each: caller IDs come from the network.
pub const MAX_ENTRIES: usize = 100_000;
/// A lift is remembered this long (longer than any complaint window that could re-derive
/// the suspension it cancelled).
pub const LIFT_MEMORY: Duration = Duration::from_secs(400 * 86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Account,
    CallerId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub subject: Subject,
    /// The account id, or the caller ID in E.164 with its `+`.
    pub id: String,
    /// The account the suspension was decided for.
    pub account: String,
    #[serde(with = "unix")]
    pub since: SystemTime,
    #[serde(with = "unix")]
    pub until: SystemTime,
    /// What suspended it: `behaviour` or `complaints`.
    pub source: String,
    /// Why, for people: the figures and their limits, or the complaints.
    pub cause: String,
}

impl Suspension {
    /// The id of a caller ID suspension for E.164 digits.
    pub fn caller_id(digits: u64) -> String {
        format!("+{digits}")
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    Suspend(Suspension),
    Lift {
        id: String,
        #[serde(with = "unix")]
        at: SystemTime,
    },
}

/// Where changes are kept. `durable`: return only once the change is on disk; otherwise the
/// change is queued in order behind the earlier ones and the call does not block.
pub trait Journal: Send + Sync {
    fn append(&self, change: &Change, durable: bool) -> io::Result<()>;
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    active: HashMap<(Subject, String), Suspension>,
    lifts: HashMap<String, SystemTime>,
}

impl Table {
    /// Apply one change; true when it changed what is enforced. A replay applies records
    /// with this same function, so a restart ends in the same table.
    pub fn apply(&mut self, change: &Change) -> bool {
        match change {
            Change::Suspend(s) => {
                if self.lifts.get(&s.id).is_some_and(|&at| s.since <= at) {
                    return false;
                }
                let key = (s.subject, s.id.clone());
                match self.active.get(&key) {
                    Some(old) if old.until >= s.until => false,
                    Some(_) => {
                        self.active.insert(key, s.clone());
                        true
                    }
                    None if self.active.len() >= MAX_ENTRIES => false,
                    None => {
                        self.active.insert(key, s.clone());
                        true
                    }
                }
            }
            Change::Lift { id, at } => {
                let before = self.active.len();
                self.active.retain(|(_, k), s| !(k == id && s.since <= *at));
                if self.lifts.len() < MAX_ENTRIES || self.lifts.contains_key(id) {
                    let e = self.lifts.entry(id.clone()).or_insert(*at);
                    *e = (*e).max(*at);
                }
                before != self.active.len()
            }
        }
    }

    /// Drop what has ended by `now`: expired suspensions and lifts older than LIFT_MEMORY.
    pub fn prune(&mut self, now: SystemTime) {
        self.active.retain(|_, s| s.until > now);
        self.lifts.retain(|_, at| now.duration_since(*at).map_or(true, |age| age < LIFT_MEMORY));
    }

    /// The records that rebuild this table (for compaction).
    pub fn records(&self) -> Vec<Change> {
        let mut out: Vec<Change> = self.lifts.iter().map(|(id, at)| Change::Lift { id: id.clone(), at: *at }).collect();
        out.extend(self.active.values().cloned().map(Change::Suspend));
        out
    }

    fn in_force(&self, subject: Subject, id: &str, now: SystemTime) -> Option<&Suspension> {
        // A lookup by (Subject, String) needs an owned key; the ids are short.
        self.active.get(&(subject, id.to_string())).filter(|s| s.until > now)
    }
}

/// The suspensions in force, shared by the screening engine and the admin API.
pub struct Suspensions {
    table: ArcSwap<Table>,
    write: Mutex<()>,
    journal: Option<Box<dyn Journal>>,
}

impl Default for Suspensions {
    fn default() -> Self {
        Suspensions::new(Table::default(), None)
    }
}

impl std::fmt::Debug for Suspensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suspensions").field("active", &self.table.load().active.len()).finish()
    }
}

impl Suspensions {
    /// A store starting from `table` (replayed by the caller), writing changes to `journal`.
    pub fn new(table: Table, journal: Option<Box<dyn Journal>>) -> Suspensions {
        Suspensions { table: ArcSwap::from_pointee(table), write: Mutex::new(()), journal }
    }

    /// The suspension that bars a call of `account` presenting `caller` (E.164 digits) at
    /// `now`: the account's own first, then the caller ID's.
    pub fn check(&self, account: &str, caller: Option<u64>, now: SystemTime) -> Option<Suspension> {
        let t = self.table.load();
        if t.active.is_empty() {
            return None;
        }
        if let Some(s) = t.in_force(Subject::Account, account, now) {
            return Some(s.clone());
        }
        let caller = caller?;
        t.in_force(Subject::CallerId, &Suspension::caller_id(caller), now).cloned()
    }

    /// Suspend, or extend a suspension to a later `until`. True when that changed anything.
    /// The journal write is queued: safe to call while screening a call.
    pub fn suspend(&self, s: Suspension) -> bool {
        self.change(Change::Suspend(s), false).unwrap_or(false)
    }

    /// As `suspend`, returning once the change is on disk.
    pub fn suspend_durable(&self, s: Suspension) -> io::Result<bool> {
        self.change(Change::Suspend(s), true)
    }

    /// Lift every suspension of `id` (a caller ID or an account), durably. Returns them.
    pub fn lift(&self, id: &str, now: SystemTime) -> io::Result<Vec<Suspension>> {
        let lifted: Vec<Suspension> = {
            let t = self.table.load();
            t.active.values().filter(|s| s.id == id && s.until > now).cloned().collect()
        };
        self.change(Change::Lift { id: id.to_string(), at: now }, true)?;
        Ok(lifted)
    }

    /// The suspensions in force at `now`, soonest to end first.
    pub fn list(&self, now: SystemTime) -> Vec<Suspension> {
        let mut v: Vec<Suspension> = self.table.load().active.values().filter(|s| s.until > now).cloned().collect();
        v.sort_by(|a, b| a.until.cmp(&b.until).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// The whole table, for compaction.
    pub fn snapshot(&self) -> Arc<Table> {
        self.table.load_full()
    }

    fn change(&self, change: Change, durable: bool) -> io::Result<bool> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Table::clone(&self.table.load());
        let now = match &change {
            Change::Suspend(s) => s.since,
            Change::Lift { at, .. } => *at,
        };
        next.prune(now);
        if !next.apply(&change) && !matches!(change, Change::Lift { .. }) {
            return Ok(false);
        }
        // On disk first when it must be: an acknowledged lift or suspension survives a crash.
        if let Some(j) = &self.journal {
            j.append(&change, durable)?;
        }
        self.table.store(Arc::new(next));
        Ok(true)
    }
}

/// Times as whole Unix seconds in the journal and the API.
pub mod unix {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = u64::deserialize(d)?;
        UNIX_EPOCH.checked_add(Duration::from_secs(secs)).ok_or_else(|| serde::de::Error::custom("time out of range"))
    }
}

/// `2026-12-02T10:00:00Z`, for Reason headers and logs.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn caller(digits: u64, since: u64, until: u64) -> Suspension {
        Suspension {
            subject: Subject::CallerId,
            id: Suspension::caller_id(digits),
            account: "acme".into(),
            since: at(since),
            until: at(until),
            source: "behaviour".into(),
            cause: "asr 0.05 < 0.15".into(),
        }
    }

    fn account(id: &str, since: u64, until: u64) -> Suspension {
        Suspension { subject: Subject::Account, id: id.into(), account: id.into(), ..caller(1, since, until) }
    }

    #[test]
    fn a_suspension_bars_until_it_ends_and_not_a_second_longer() {
        let s = Suspensions::default();
        assert!(s.suspend(caller(12125550100, 100, 200)));
        assert_eq!(s.check("acme", Some(12125550100), at(100)).map(|x| x.id), Some("+12125550100".into()));
        assert!(s.check("acme", Some(12125550100), at(199)).is_some());
        assert!(s.check("acme", Some(12125550100), at(200)).is_none());
        assert!(s.check("acme", Some(12125550101), at(150)).is_none(), "another caller ID of the account");
        assert!(s.check("acme", None, at(150)).is_none());
    }

    #[test]
    fn an_account_suspension_covers_every_caller_id() {
        let s = Suspensions::default();
        s.suspend(account("acme", 100, 200));
        assert!(s.check("acme", Some(1), at(150)).is_some());
        assert!(s.check("acme", None, at(150)).is_some());
        assert!(s.check("other", Some(1), at(150)).is_none());
    }

    #[test]
    fn only_a_later_end_extends() {
        let s = Suspensions::default();
        assert!(s.suspend(caller(1, 100, 300)));
        assert!(!s.suspend(caller(1, 150, 250)), "shorter: nothing changes");
        assert!(s.suspend(caller(1, 150, 400)));
        assert_eq!(s.list(at(160))[0].until, at(400));
    }

    #[test]
    fn a_lift_outlives_a_replay_of_what_it_lifted() {
        let s = Suspensions::default();
        s.suspend(account("acme", 100, 1000));
        let lifted = s.lift("acme", at(150)).unwrap();
        assert_eq!(lifted.len(), 1);
        assert!(s.check("acme", None, at(160)).is_none());
        // The complaints journal derives the same suspension again at start-up.
        assert!(!s.suspend(account("acme", 100, 1000)));
        assert!(s.check("acme", None, at(160)).is_none());
        // A new cause after the lift suspends again.
        assert!(s.suspend(account("acme", 200, 1000)));
        assert!(s.check("acme", None, at(210)).is_some());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = Table::default();
        for i in 0..MAX_ENTRIES as u64 + 10 {
            t.apply(&Change::Suspend(caller(i, 1, 10)));
        }
        assert_eq!(t.active.len(), MAX_ENTRIES);
        t.prune(at(10));
        assert!(t.active.is_empty());
    }

    #[test]
    fn records_rebuild_the_table() {
        let mut t = Table::default();
        t.apply(&Change::Suspend(caller(1, 1, 100)));
        t.apply(&Change::Suspend(account("acme", 1, 100)));
        t.apply(&Change::Lift { id: "+1".into(), at: at(5) });
        let mut again = Table::default();
        for r in t.records() {
            again.apply(&r);
        }
        assert_eq!(again.active, t.active);
        assert_eq!(again.lifts, t.lifts);
    }

    #[test]
    fn journal_records_are_json_lines() {
        let c = Change::Lift { id: "acme".into(), at: at(5) };
        let line = serde_json::to_string(&c).unwrap();
        assert_eq!(line, r#"{"op":"lift","id":"acme","at":5}"#);
        assert_eq!(serde_json::from_str::<Change>(&line).unwrap(), c);
        let s = Change::Suspend(caller(1, 1, 2));
        let back: Change = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
