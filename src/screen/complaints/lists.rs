//! The `complaints` do-not-call list: per account (and, with `by_category`, per category),
//! the numbers whose owners complained, with the complaint that put each there. Read on every
//! screened call (a lock-free load, at most two look-ups); written when a complaint lands.
use crate::screen::hash::NumberMap;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The list's name in decisions, the decision log and `[responses.complaints]`.
pub const LIST_NAME: &str = "complaints";

/// Whose list an entry is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", content = "name", rename_all = "snake_case")]
pub enum Scope {
    Account(Box<str>),
    Category(Box<str>),
}

/// Why a number is listed: the complaint and when it was filed (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub complaint: u64,
    pub at: u64,
}

/// Looked up by `&str` (no allocation per call): accounts' lists and categories' apart.
#[derive(Debug, Clone, Default)]
struct Table {
    accounts: HashMap<Box<str>, Arc<NumberMap<Listed>>>,
    categories: HashMap<Box<str>, Arc<NumberMap<Listed>>>,
}

#[derive(Default)]
pub struct Lists {
    table: ArcSwap<Table>,
    write: Mutex<()>,
}

impl std::fmt::Debug for Lists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lists").field("entries", &self.len()).finish()
    }
}

impl Lists {
    /// The entry that blocks `callee` for `account` (of `category`): the account's own
    /// first, then its category's.
    pub fn check(&self, callee: u64, account: &str, category: Option<&str>) -> Option<(Scope, Listed)> {
        let t = self.table.load();
        if let Some(l) = t.accounts.get(account).and_then(|m| m.get(&callee)) {
            return Some((Scope::Account(account.into()), *l));
        }
        let category = category?;
        t.categories.get(category).and_then(|m| m.get(&callee)).map(|l| (Scope::Category(category.into()), *l))
    }

    /// Add entries (a number already listed keeps its first complaint). Returns how many
    /// were new.
    pub fn add(&self, entries: &[(Scope, u64, Listed)]) -> usize {
        if entries.is_empty() {
            return 0;
        }
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Table::clone(&self.table.load());
        let mut added = 0;
        for (scope, number, listed) in entries {
            let (maps, name) = match scope {
                Scope::Account(a) => (&mut next.accounts, a),
                Scope::Category(c) => (&mut next.categories, c),
            };
            let map = Arc::make_mut(maps.entry(name.clone()).or_default());
            if !map.contains_key(number) {
                map.insert(*number, *listed);
                added += 1;
            }
        }
        self.table.store(Arc::new(next));
        added
    }

    pub fn len(&self) -> usize {
        let t = self.table.load();
        t.accounts.values().chain(t.categories.values()).map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry (for compacting the journal).
    pub fn entries(&self) -> Vec<(Scope, u64, Listed)> {
        let t = self.table.load();
        let of = |maps: &HashMap<Box<str>, Arc<NumberMap<Listed>>>, scope: fn(Box<str>) -> Scope| {
            maps.iter()
                .flat_map(move |(k, m)| m.iter().map(move |(n, l)| (scope(k.clone()), *n, *l)))
                .collect::<Vec<_>>()
        };
        let mut v = of(&t.accounts, Scope::Account);
        v.extend(of(&t.categories, Scope::Category));
        v.sort_by_key(|(_, _, l)| l.complaint);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_list_then_category() {
        let l = Lists::default();
        assert!(l.check(1, "acme", None).is_none());
        let at = Listed { complaint: 1, at: 10 };
        assert_eq!(l.add(&[(Scope::Account("acme".into()), 13125550199, at)]), 1);
        assert_eq!(l.add(&[(Scope::Account("acme".into()), 13125550199, Listed { complaint: 2, at: 20 })]), 0);
        assert_eq!(l.check(13125550199, "acme", None), Some((Scope::Account("acme".into()), at)));
        assert!(l.check(13125550199, "beta", Some("energy")).is_none());
        l.add(&[(Scope::Category("energy".into()), 13125550198, Listed { complaint: 3, at: 30 })]);
        assert_eq!(l.check(13125550198, "beta", Some("energy")).map(|x| x.1.complaint), Some(3));
        assert!(l.check(13125550198, "beta", None).is_none());
        assert_eq!(l.len(), 2);
        assert_eq!(l.entries().len(), 2);
    }
}
