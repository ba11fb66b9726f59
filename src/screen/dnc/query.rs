//! "Is this number blocked, and why?": one answer shared by `sipguard dnc check` (lists
//! loaded from the config), `GET /dnc/<number>?account=ID` on the admin listener (the lists
//! and accounts the running proxy uses) and `dnc check --admin` (which prints the latter).
//!
//! The verdict for an account is `Dnc::check`, the call the screening engine makes for every
//! INVITE, with the account's configured category: the CLI and the proxy cannot disagree.
use super::Dnc;
use super::list::Entry;
use crate::screen::number::format_e164;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// The account a query screens as, resolved from the configuration (never typed in).
#[derive(Debug, Clone, Copy)]
pub struct AsAccount<'a> {
    pub id: &'a str,
    pub category: Option<&'a str>,
}

/// One list's entry for the number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAnswer {
    pub list: String,
    /// `all` (blocks every account), `categories` (blocks accounts of `categories`) or
    /// `removed` (was in the base list, removed by a delta).
    pub entry: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// The accounts the list is limited to; absent when it applies to every account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
    pub response: String,
}

/// The list that blocks the number for the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub list: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub response: String,
}

/// The whole answer; serialised as the admin endpoint's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub number: String,
    pub lists: Vec<ListAnswer>,
    /// Accounts whose consent list holds the number.
    pub consent: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// For an account: whether the proxy would refuse a call from it to the number. Without
    /// one: whether any list holds the number for some account.
    pub blocked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit: Option<Hit>,
}

/// Answer for `number`, as a call from `account` would be screened (or for anyone).
pub fn query(dnc: &Dnc, number: u64, account: Option<AsAccount<'_>>) -> Answer {
    let lists: Vec<ListAnswer> = dnc
        .entries(number)
        .into_iter()
        .map(|e| {
            let (entry, categories) = match e.entry {
                Entry::All => ("all", Vec::new()),
                Entry::Categories(c) => ("categories", c.iter().map(|c| c.to_string()).collect()),
                Entry::Removed => ("removed", Vec::new()),
            };
            ListAnswer {
                list: e.list.to_string(),
                entry: entry.into(),
                categories,
                accounts: e.accounts,
                response: e.response.to_string(),
            }
        })
        .collect();
    let consent = dnc.consenting_accounts(number).into_iter().map(String::from).collect();
    let (blocked, hit) = match account {
        Some(a) => {
            let hit = dnc.check(number, a.id, a.category).map(|h| Hit {
                list: h.list.to_string(),
                category: h.category.map(|c| c.to_string()),
                response: h.response.to_string(),
            });
            (hit.is_some(), hit)
        }
        None => (lists.iter().any(|l| l.entry != "removed"), None),
    };
    Answer {
        number: format_e164(number),
        lists,
        consent,
        account: account.map(|a| a.id.to_string()),
        category: account.and_then(|a| a.category).map(String::from),
        blocked,
        hit,
    }
}

/// The text `sipguard dnc check` prints, whether the answer was computed here or by a
/// running proxy.
pub fn render(a: &Answer) -> String {
    let mut text = String::new();
    let n = &a.number;
    for l in &a.lists {
        let what = match l.entry.as_str() {
            "all" => "blocks every account".to_string(),
            "categories" => format!("blocks accounts of category {}", l.categories.join(", ")),
            "removed" => "removed by a delta".to_string(),
            other => other.to_string(),
        };
        let scope =
            l.accounts.as_ref().map(|a| format!(" (list applies to accounts {})", a.join(", "))).unwrap_or_default();
        let _ = writeln!(text, "{n}: list `{}` {what}{scope}, response `{}`", l.list, l.response);
    }
    for c in &a.consent {
        let _ = writeln!(text, "{n}: account `{c}` has consent to call it");
    }
    match (&a.account, &a.hit) {
        (Some(acct), Some(hit)) => {
            let cat = hit.category.as_ref().map(|c| format!(", category `{c}`")).unwrap_or_default();
            let _ =
                writeln!(text, "BLOCKED for account `{acct}` by list `{}`{cat}, response `{}`", hit.list, hit.response);
        }
        (Some(acct), None) => {
            let cat = a.category.as_ref().map(|c| format!(" (category `{c}`)")).unwrap_or_default();
            let _ = writeln!(text, "not blocked for account `{acct}`{cat}");
        }
        (None, _) if a.blocked => text.push_str("BLOCKED (for the accounts above)\n"),
        (None, _) => text.push_str("not on any list\n"),
    }
    text
}
