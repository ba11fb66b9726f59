//! Complaints: a callee saying a call was unwanted. Taken in (`intake`), tied to the account
//! that placed the call (`attribution`, over the `index` of forwarded calls), and acted on:
//! the complainant's number goes on the account's `complaints` list (`lists`), and an account
//! or caller ID that collects complaints is suspended (the `suspended` rule).
//!
//! Pure: the shell's desk (`state::complaints`) journals what `Book::effects` decides and
//! applies it; `now` is always passed in.
pub mod attribution;
pub mod index;
pub mod intake;
pub mod lists;

use crate::config::complaints::ComplaintsConfig;
use crate::screen::suspension::{Subject, Suspension, rfc3339};
use attribution::Attribution;
use lists::{Listed, Scope};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A suspension "until lifted" ends this far ahead.
pub const UNTIL_LIFTED: Duration = Duration::from_secs(100 * 365 * 86_400);
/// Complaint ids a suspension's cause names at most.
const CAUSE_IDS: usize = 5;

/// One complaint as kept (journal) and shown (API). Times in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complaint {
    pub id: u64,
    /// When sipguard took it in.
    pub received: u64,
    /// When the call was, by the complainant.
    pub time: u64,
    pub caller: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee_area_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub attribution: Attribution,
}

impl Complaint {
    pub fn new(id: u64, received: SystemTime, r: &intake::Record, attribution: Attribution) -> Complaint {
        let (callee, callee_area_code) = attribution::callee_text(r.callee);
        Complaint {
            id,
            received: unix(received),
            time: unix(r.time),
            caller: format!("+{}", r.caller),
            callee,
            callee_area_code,
            call_id: r.call_id.clone(),
            category: r.category.clone(),
            source: r.source.clone(),
            note: r.note.clone(),
            attribution,
        }
    }

    fn callee_digits(&self) -> Option<u64> {
        self.callee.as_deref()?.strip_prefix('+')?.parse().ok()
    }

    /// The caller ID the call presented: the matched call's, else what the complainant saw.
    pub fn presented(&self) -> &str {
        self.attribution.call.as_ref().map_or(&self.caller, |c| &c.caller)
    }

    fn presented_digits(&self) -> Option<u64> {
        self.presented().strip_prefix('+')?.parse().ok()
    }

    pub fn account(&self) -> Option<&str> {
        self.attribution.account.as_deref()
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// One line of the complaints journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum JournalRecord {
    Complaint(Box<Complaint>),
    /// A number put on a `complaints` list.
    Listed {
        list: Scope,
        number: u64,
        listed: Listed,
    },
    /// A suspension a complaint decided (also in the suspensions journal once applied; kept
    /// here so a crash between the two journals loses nothing).
    Suspend(Suspension),
}

/// What filing one complaint does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub listed: Vec<(Scope, u64, Listed)>,
    pub suspensions: Vec<Suspension>,
}

impl Effects {
    pub fn records(&self) -> impl Iterator<Item = JournalRecord> + '_ {
        let listed =
            self.listed.iter().map(|(s, n, l)| JournalRecord::Listed { list: s.clone(), number: *n, listed: *l });
        listed.chain(self.suspensions.iter().cloned().map(JournalRecord::Suspend))
    }

    /// For the API answer.
    pub fn describe(&self) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = self
            .listed
            .iter()
            .map(|(s, n, _)| {
                let (kind, name) = match s {
                    Scope::Account(a) => ("account", a),
                    Scope::Category(c) => ("category", c),
                };
                serde_json::json!({ "effect": "listed", "list": lists::LIST_NAME, kind: &**name, "number": format!("+{n}") })
            })
            .collect();
        out.extend(self.suspensions.iter().map(|s| {
            serde_json::json!({ "effect": "suspended", "subject": s.subject, "id": s.id, "account": s.account,
                "until": rfc3339(s.until), "cause": s.cause })
        }));
        out
    }
}

/// Every complaint taken, in order.
#[derive(Debug, Default, Clone)]
pub struct Book {
    complaints: Vec<Complaint>,
    /// Positions in `complaints` per account.
    by_account: HashMap<String, Vec<usize>>,
    by_id: HashMap<u64, usize>,
    next_id: u64,
}

impl Book {
    pub fn len(&self) -> usize {
        self.complaints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.complaints.is_empty()
    }

    /// The id the next complaint gets.
    pub fn next_id(&self) -> u64 {
        self.next_id.max(1)
    }

    pub fn add(&mut self, c: Complaint) {
        if self.by_id.contains_key(&c.id) {
            return;
        }
        self.next_id = self.next_id.max(c.id + 1);
        let pos = self.complaints.len();
        if let Some(a) = c.account() {
            self.by_account.entry(a.to_string()).or_default().push(pos);
        }
        self.by_id.insert(c.id, pos);
        self.complaints.push(c);
    }

    pub fn get(&self, id: u64) -> Option<&Complaint> {
        self.complaints.get(*self.by_id.get(&id)?)
    }

    pub fn all(&self) -> &[Complaint] {
        &self.complaints
    }

    /// Complaints of `account` (or all) received at or after `since`, oldest first.
    pub fn list(&self, account: Option<&str>, since: Option<u64>) -> Vec<&Complaint> {
        let keep = |c: &&Complaint| since.is_none_or(|s| c.received >= s);
        match account {
            Some(a) => self
                .by_account
                .get(a)
                .into_iter()
                .flatten()
                .filter_map(|&i| self.complaints.get(i))
                .filter(keep)
                .collect(),
            None => self.complaints.iter().filter(keep).collect(),
        }
    }

    /// Complaints per account, `unattributed` for the rest.
    pub fn counts(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.by_account.iter().map(|(a, c)| (a.clone(), c.len() as u64)).collect();
        let attributed: u64 = v.iter().map(|x| x.1).sum();
        let rest = self.complaints.len() as u64 - attributed;
        if rest > 0 {
            v.push(("unattributed".into(), rest));
        }
        v.sort();
        v
    }

    /// What `c` does, filed at `now` after the complaints of `batch` (an import, not yet in
    /// the book). `category`: the account's category.
    pub fn effects(
        &self,
        c: &Complaint,
        batch: &[Complaint],
        cfg: &ComplaintsConfig,
        category: Option<Arc<str>>,
        now: SystemTime,
    ) -> Effects {
        let mut fx = Effects::default();
        let Some(account) = c.account() else {
            return fx;
        };
        let listed = Listed { complaint: c.id, at: unix(now) };
        if cfg.callee_to_dnc
            && let Some(n) = c.callee_digits()
        {
            fx.listed.push((Scope::Account(account.into()), n, listed));
            if cfg.by_category
                && let Some(cat) = category
            {
                fx.listed.push((Scope::Category((*cat).into()), n, listed));
            }
        }
        let oldest = unix(now).saturating_sub(cfg.window.as_secs());
        let recent: Vec<&Complaint> = self
            .list(Some(account), None)
            .into_iter()
            .chain(batch.iter().filter(|b| b.account() == Some(account)))
            .chain(std::iter::once(c))
            .filter(|x| x.time >= oldest)
            .collect();
        let days = cfg.window.as_secs() / 86_400;
        let until = now + cfg.suspend_for.unwrap_or(UNTIL_LIFTED);
        let cause = |what: &str, of: &[&Complaint]| {
            let ids: Vec<String> = of
                .iter()
                .rev()
                .take(CAUSE_IDS)
                .rev()
                .map(|x| format!("#{} at {}", x.id, rfc3339(at(x.time))))
                .collect();
            format!("{} complaints {what}within {days} days: {}", of.len(), ids.join(", "))
        };
        if cfg.suspend_caller_id_after > 0
            && let Some(caller) = c.presented_digits()
        {
            let about: Vec<&Complaint> = recent.iter().copied().filter(|x| x.presented() == c.presented()).collect();
            if about.len() >= cfg.suspend_caller_id_after as usize {
                fx.suspensions.push(Suspension {
                    subject: Subject::CallerId,
                    id: Suspension::caller_id(caller),
                    account: account.into(),
                    since: now,
                    until,
                    source: "complaints".into(),
                    cause: cause(&format!("about {} ", c.presented()), &about),
                });
            }
        }
        if cfg.suspend_account_after > 0 && recent.len() >= cfg.suspend_account_after as usize {
            fx.suspensions.push(Suspension {
                subject: Subject::Account,
                id: account.into(),
                account: account.into(),
                since: now,
                until,
                source: "complaints".into(),
                cause: cause("", &recent),
            });
        }
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::attribution::By;
    use super::index::Callee;
    use super::*;

    fn complaint(id: u64, account: Option<&str>, caller: u64, callee: u64, time: u64) -> Complaint {
        let r = intake::Record {
            caller,
            callee: Callee::Number(callee),
            time: at(time),
            call_id: None,
            category: None,
            source: None,
            note: None,
        };
        let by = if account.is_some() { By::Owner } else { By::None };
        Complaint::new(id, at(time), &r, Attribution { account: account.map(str::to_string), by, call: None })
    }

    const DAY: u64 = 86_400;

    #[test]
    fn first_complaint_lists_and_suspends_the_caller_id_second_the_account() {
        let cfg = ComplaintsConfig::default();
        let mut b = Book::default();
        let c1 = complaint(1, Some("acme"), 12125550100, 13125550199, 100 * DAY);
        let fx = b.effects(&c1, &[], &cfg, None, at(100 * DAY));
        assert_eq!(fx.listed, [(Scope::Account("acme".into()), 13125550199, Listed { complaint: 1, at: 100 * DAY })]);
        assert_eq!(fx.suspensions.len(), 1);
        assert_eq!((fx.suspensions[0].subject, fx.suspensions[0].id.as_str()), (Subject::CallerId, "+12125550100"));
        assert!(fx.suspensions[0].cause.starts_with("1 complaints about +12125550100 within 30 days: #1 at "));
        assert_eq!(fx.suspensions[0].until, at(100 * DAY) + UNTIL_LIFTED);
        b.add(c1);
        // Another caller ID of the same account: the account now has 2 in 30 days.
        let c2 = complaint(2, Some("acme"), 12125550101, 13125550198, 101 * DAY);
        let fx = b.effects(&c2, &[], &cfg, None, at(101 * DAY));
        let acct = fx.suspensions.iter().find(|s| s.subject == Subject::Account).unwrap();
        assert_eq!(acct.id, "acme");
        assert!(acct.cause.starts_with("2 complaints within 30 days: #1 at"), "{}", acct.cause);
    }

    #[test]
    fn old_complaints_fall_out_of_the_window() {
        let cfg = ComplaintsConfig { suspend_caller_id_after: 0, ..Default::default() };
        let mut b = Book::default();
        b.add(complaint(1, Some("acme"), 1, 2, 10 * DAY));
        let c2 = complaint(2, Some("acme"), 1, 3, 41 * DAY);
        assert!(b.effects(&c2, &[], &cfg, None, at(41 * DAY)).suspensions.is_empty());
        // Within an import, earlier records of the batch count.
        let c3 = complaint(3, Some("acme"), 1, 4, 41 * DAY);
        assert_eq!(b.effects(&c3, std::slice::from_ref(&c2), &cfg, None, at(41 * DAY)).suspensions.len(), 1);
    }

    #[test]
    fn unattributed_complaints_do_nothing_but_are_counted() {
        let cfg = ComplaintsConfig { by_category: true, ..Default::default() };
        let mut b = Book::default();
        let c = complaint(1, None, 1, 2, DAY);
        assert_eq!(b.effects(&c, &[], &cfg, None, at(DAY)), Effects::default());
        b.add(c);
        let c = complaint(2, Some("acme"), 1, 13125550199, DAY);
        let fx = b.effects(&c, &[], &cfg, Some("energy".into()), at(DAY));
        assert_eq!(fx.listed.len(), 2, "own list and the category's");
        b.add(c);
        assert_eq!(b.counts(), [("acme".to_string(), 1), ("unattributed".to_string(), 1)]);
        assert_eq!(b.list(Some("acme"), None).len(), 1);
        assert_eq!(b.list(None, Some(DAY + 1)).len(), 0);
        assert_eq!(b.next_id(), 3);
    }

    #[test]
    fn journal_records_round_trip() {
        let c = complaint(1, Some("acme"), 1, 2, DAY);
        for r in [
            JournalRecord::Complaint(Box::new(c)),
            JournalRecord::Listed {
                list: Scope::Category("x".into()),
                number: 5,
                listed: Listed { complaint: 1, at: 2 },
            },
        ] {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<JournalRecord>(&line).unwrap(), r, "{line}");
        }
    }
}
