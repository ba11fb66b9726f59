//! Which account placed the call a complaint is about, in this order: the Call-ID the
//! complainant (or the carrier) quotes; the forwarded call from that caller to that callee
//! closest in time within `match_minutes`; the account that owns the caller ID.
use super::index::{Callee, Found, Index};
use super::intake::Record;
use crate::screen::suspension::rfc3339;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    CallId,
    Index,
    Owner,
    None,
}

/// The decision record of a forwarded call: what a traceback request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub time: String,
    pub time_unix: u64,
    pub source: Option<String>,
    pub account: Option<String>,
    pub caller: String,
    pub callee: String,
    /// `forward`, or `would_reject` in report mode.
    pub verdict: String,
    /// The rules that fired (report mode), none for a plain forward.
    pub rules: Vec<String>,
    pub attestation: Option<String>,
}

impl CallRecord {
    pub fn of(f: &Found) -> CallRecord {
        let e = &f.entry;
        CallRecord {
            time: rfc3339(e.unix_time()),
            time_unix: u64::from(e.time),
            source: e.source_ip().map(|ip| ip.to_string()),
            account: f.account.as_deref().map(str::to_string),
            caller: format!("+{}", e.caller),
            callee: format!("+{}", e.callee),
            verdict: if e.would_reject() { "would_reject" } else { "forward" }.into(),
            rules: e.rule().map(|r| r.name().to_string()).into_iter().collect(),
            attestation: e.attestation().map(|a| a.as_str().to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// None: unattributed (kept and counted all the same).
    pub account: Option<String>,
    pub by: By,
    /// The forwarded call matched (by Call-ID or the index).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub call: Option<CallRecord>,
}

/// Attribute `r`. `owner_of` names the account owning a caller ID (the first in config
/// order when several do).
pub fn attribute(
    r: &Record,
    index: &Index,
    window: Duration,
    owner_of: impl Fn(u64) -> Option<Arc<str>>,
) -> Attribution {
    let with_account = |f: Found| f.account.is_some().then_some(f);
    let found = |f: Found, by| Attribution {
        account: f.account.as_deref().map(str::to_string),
        by,
        call: Some(CallRecord::of(&f)),
    };
    if let Some(f) = r.call_id.as_deref().and_then(|id| index.by_call_id(id)).and_then(with_account) {
        return found(f, By::CallId);
    }
    if let Some(f) = index.matching(r.caller, r.callee, r.time, window).and_then(with_account) {
        return found(f, By::Index);
    }
    match owner_of(r.caller) {
        Some(a) => Attribution { account: Some(a.to_string()), by: By::Owner, call: None },
        None => Attribution { account: None, by: By::None, call: None },
    }
}

/// The callee as the API shows it.
pub fn callee_text(c: Callee) -> (Option<String>, Option<String>) {
    match c {
        Callee::Number(n) => (Some(format!("+{n}")), None),
        Callee::Prefix(p) => (None, Some(p.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::Decision;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn rec(call_id: Option<&str>, caller: u64, callee: u64, t: u64) -> Record {
        Record {
            caller,
            callee: Callee::Number(callee),
            time: at(t),
            call_id: call_id.map(str::to_string),
            category: None,
            source: None,
            note: None,
        }
    }

    fn indexed() -> Index {
        let i = Index::new((7, 8), 100, Duration::from_secs(7 * 86_400), false);
        for (t, id, acct, caller) in [(1000, "one@x", "acme", 12125550100u64), (1010, "two@x", "beta", 12125550100)] {
            let d = Decision {
                account: Some(acct.into()),
                caller: Some(caller),
                callee: Some(13125550199),
                ..Decision::pass()
            };
            i.record(i.entry_of(at(t), id, Some("192.0.2.9".parse().unwrap()), &d).unwrap(), at(t));
        }
        i
    }

    const W: Duration = Duration::from_secs(600);

    #[test]
    fn call_id_first_then_index_then_owner_then_none() {
        let i = indexed();
        let owner = |n: u64| (n == 12125550100 || n == 12125550177).then(|| Arc::from("owner-co"));
        // The Call-ID wins over a closer call in the index.
        let a = attribute(&rec(Some("one@x"), 12125550100, 13125550199, 1010), &i, W, owner);
        assert_eq!((a.account.as_deref(), a.by), (Some("acme"), By::CallId));
        let call = a.call.unwrap();
        assert_eq!(
            (call.source.as_deref(), call.time_unix, call.verdict.as_str()),
            (Some("192.0.2.9"), 1000, "forward")
        );
        // An unknown Call-ID falls back to the index: the closest call.
        let a = attribute(&rec(Some("nope"), 12125550100, 13125550199, 1009), &i, W, owner);
        assert_eq!((a.account.as_deref(), a.by), (Some("beta"), By::Index));
        // No call within the window: the owner of the caller ID.
        let a = attribute(&rec(None, 12125550100, 13125550199, 5000), &i, W, owner);
        assert_eq!((a.account.as_deref(), a.by, a.call), (Some("owner-co"), By::Owner, None));
        // Nobody.
        let a = attribute(&rec(None, 12125550111, 13125550199, 1000), &i, W, owner);
        assert_eq!((a.account, a.by), (None, By::None));
    }
}
