//! What a ratio rule that trips does by `action`: the suspension it decides (caller ID or
//! account, `suspend_minutes`, source `behaviour`, the figure in the cause), and in report
//! mode the memory of would-be suspensions already logged, so that each is logged once.
use super::{Action, Limits, Subject, Trip};
use crate::screen::suspension::{self, MAX_ENTRIES, Suspension};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The suspension `trip` asks for under `limits.action`; None for a flag or a rule that is
/// not a ratio (those refuse the call only).
pub fn decide(trip: &Trip, limits: &Limits, account: &str, caller: Option<u64>, now: SystemTime) -> Option<Suspension> {
    let Trip::Ratio { subject, .. } = trip else { return None };
    let (subject, id) = match (limits.action, subject) {
        (Action::SuspendCallerId, Subject::CallerId) => (suspension::Subject::CallerId, Suspension::caller_id(caller?)),
        (Action::SuspendAccount, Subject::Account) => (suspension::Subject::Account, account.to_string()),
        // A flag; or figures of the other subject (the judge does not read them then).
        _ => return None,
    };
    // Whole seconds, as the journal keeps them: calls that trip in the same second ask for
    // the same suspension, which the store then takes (and the log shows) once.
    let since = UNIX_EPOCH + Duration::from_secs(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    Some(Suspension {
        subject,
        id,
        account: account.to_string(),
        since,
        until: since + Duration::from_secs(u64::from(limits.suspend_minutes) * 60),
        source: "behaviour".into(),
        cause: trip.describe(),
    })
}

/// Would-be suspensions (report mode) already logged, each until it would have ended.
/// Bounded like the suspension table; std's keyed hasher (ids come from the network).
#[derive(Debug, Default)]
pub struct WouldBe {
    logged: Mutex<HashMap<(suspension::Subject, String), SystemTime>>,
}

impl WouldBe {
    /// True the first time `s` would be in force (to be logged); false while an earlier one
    /// of the same id would still be, or when the memory is full of live entries.
    pub fn first(&self, s: &Suspension, now: SystemTime) -> bool {
        let mut m = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let key = (s.subject, s.id.clone());
        if m.get(&key).is_some_and(|&until| until > now) {
            return false;
        }
        if m.len() >= MAX_ENTRIES {
            m.retain(|_, until| *until > now);
            if m.len() >= MAX_ENTRIES {
                return false;
            }
        }
        m.insert(key, s.until);
        true
    }

    pub fn len(&self) -> usize {
        self.logged.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn asr(subject: Subject) -> Trip {
        Trip::Ratio { subject, figure: "asr", value: 0.05, limit: 0.15, attempts: 40 }
    }

    #[test]
    fn the_action_picks_the_subject_and_the_length() {
        let mut l = Limits { action: Action::SuspendCallerId, suspend_minutes: 30, ..Limits::default() };
        let s = decide(&asr(Subject::CallerId), &l, "acme", Some(12125550100), at(0)).unwrap_or_else(|| panic!());
        assert_eq!(
            (s.subject, s.id.as_str(), s.account.as_str()),
            (suspension::Subject::CallerId, "+12125550100", "acme")
        );
        assert_eq!(s.until.duration_since(s.since).ok(), Some(Duration::from_secs(1800)));
        assert_eq!(s.source, "behaviour");
        assert_eq!(s.cause, "caller ID asr 0.050 below 0.15 over 40 attempts");
        assert!(decide(&asr(Subject::CallerId), &l, "acme", None, at(0)).is_none(), "no caller ID to suspend");
        l.action = Action::SuspendAccount;
        let s = decide(&asr(Subject::Account), &l, "acme", Some(1), at(0)).unwrap_or_else(|| panic!());
        assert_eq!((s.subject, s.id.as_str()), (suspension::Subject::Account, "acme"));
        l.action = Action::Flag;
        assert!(decide(&asr(Subject::Account), &l, "acme", Some(1), at(0)).is_none());
        l.action = Action::SuspendAccount;
        let concurrent = Trip::Concurrent { live: 3, limit: 3 };
        assert!(decide(&concurrent, &l, "acme", Some(1), at(0)).is_none(), "refused, not suspended");
    }

    #[test]
    fn since_is_whole_seconds_so_one_second_asks_once() {
        let l = Limits { action: Action::SuspendAccount, ..Limits::default() };
        let a = decide(&asr(Subject::Account), &l, "acme", None, at(5) + Duration::from_millis(10));
        let b = decide(&asr(Subject::Account), &l, "acme", None, at(5) + Duration::from_millis(990));
        assert_eq!(a, b);
    }

    #[test]
    fn a_would_be_suspension_is_logged_once_until_it_would_end() {
        let l = Limits { action: Action::SuspendAccount, suspend_minutes: 1, ..Limits::default() };
        let w = WouldBe::default();
        let s = decide(&asr(Subject::Account), &l, "acme", None, at(0)).unwrap_or_else(|| panic!());
        assert!(w.first(&s, at(0)));
        assert!(!w.first(&s, at(1)));
        assert!(!w.first(&s, at(59)));
        let again = decide(&asr(Subject::Account), &l, "acme", None, at(60)).unwrap_or_else(|| panic!());
        assert!(w.first(&again, at(60)), "the first would have ended");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn the_would_be_memory_is_bounded() {
        let l = Limits { action: Action::SuspendCallerId, suspend_minutes: 1, ..Limits::default() };
        let w = WouldBe::default();
        for n in 0..MAX_ENTRIES as u64 + 5 {
            let s = decide(&asr(Subject::CallerId), &l, "acme", Some(n), at(0)).unwrap_or_else(|| panic!());
            w.first(&s, at(0));
        }
        assert_eq!(w.len(), MAX_ENTRIES);
        let s = decide(&asr(Subject::CallerId), &l, "acme", Some(u64::MAX), at(61)).unwrap_or_else(|| panic!());
        assert!(w.first(&s, at(61)), "expired entries make room");
        assert_eq!(w.len(), 1);
    }
}
