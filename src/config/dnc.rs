//! `[dnc]`, `[[dnc.list]]` and `[[dnc.consent]]`: which do-not-call lists to load and how.
use super::{Diagnostics, Spanned};
use crate::screen::number::NumberPlan;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
pub struct RawDnc {
    pub default_country: Option<Spanned<String>>,
    pub strict: Option<bool>,
    #[serde(default)]
    pub list: Vec<RawList>,
    #[serde(default)]
    pub consent: Vec<RawConsent>,
}

#[derive(Debug, Deserialize)]
pub struct RawList {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
    pub response: Option<Spanned<String>>,
    pub accounts: Option<Spanned<Vec<Spanned<String>>>>,
    pub deltas: Option<Spanned<String>>,
    pub strict: Option<bool>,
    pub consent_applies: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct RawConsent {
    pub account: Spanned<String>,
    pub path: Spanned<String>,
}

/// The validated `[dnc]` section: everything `Dnc::load` needs.
#[derive(Debug, Clone, Default)]
pub struct DncConfig {
    /// How national numbers in text lists are read; None: only `+E.164` and FTC lines.
    pub plan: Option<NumberPlan>,
    /// Default for lists, and the policy for consent files.
    pub strict: bool,
    pub lists: Vec<ListConfig>,
    pub consent: Vec<ConsentConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListConfig {
    pub name: Arc<str>,
    /// A text list or a snapshot (told apart by the snapshot magic).
    pub path: PathBuf,
    /// Name of the `[responses.<name>]` entry that answers a hit.
    pub response: Arc<str>,
    /// Only calls from these accounts are screened against the list; None: all accounts.
    pub accounts: Option<Vec<String>>,
    pub deltas: Option<PathBuf>,
    /// A bad line aborts the load instead of being skipped and counted.
    pub strict: bool,
    /// Whether an account's consent list exempts numbers from this list.
    pub consent_applies: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentConfig {
    pub account: String,
    pub path: PathBuf,
}

pub fn validate(raw: &RawDnc, d: &mut Diagnostics<'_>) -> Option<DncConfig> {
    let errors = d.errors.len();
    let plan = raw.default_country.as_ref().and_then(|c| {
        let plan = NumberPlan::for_country(c.get_ref());
        if plan.is_none() {
            d.error(c.span(), format!("unknown country `{}`: expected an ISO 3166 code such as \"US\"", c.get_ref()));
        }
        plan
    });
    let strict = raw.strict.unwrap_or(false);
    let mut lists: Vec<ListConfig> = Vec::new();
    let mut first_line = std::collections::HashMap::new();
    for l in &raw.list {
        let name = l.name.get_ref().trim();
        if name.is_empty() {
            d.error(l.name.span(), "list name is empty");
        } else if let Some(line) = first_line.get(name) {
            d.error(l.name.span(), format!("duplicate list name `{name}` (first at line {line})"));
        } else {
            first_line.insert(name.to_string(), d.line_of(l.name.span().start));
        }
        let path = existing(d, &l.path, false);
        let deltas = l.deltas.as_ref().and_then(|p| existing(d, p, true));
        let response = l.response.as_ref().map_or("dnc", |r| r.get_ref().as_str());
        if let Some(r) = l.response.as_ref().filter(|r| r.get_ref().is_empty()) {
            d.error(r.span(), "response is empty: name a [responses.<name>] entry");
        }
        let accounts = l.accounts.as_ref().map(|a| {
            if a.get_ref().is_empty() {
                d.error(a.span(), "accounts = [] would screen no account against this list; omit it for all");
            }
            a.get_ref().iter().map(|s| s.get_ref().clone()).collect()
        });
        lists.push(ListConfig {
            name: name.into(),
            path: path.unwrap_or_default(),
            response: response.into(),
            accounts,
            deltas,
            strict: l.strict.unwrap_or(strict),
            consent_applies: l.consent_applies.unwrap_or(true),
        });
    }
    let mut consent = Vec::new();
    for c in &raw.consent {
        if c.account.get_ref().is_empty() {
            d.error(c.account.span(), "consent account is empty");
        }
        if let Some(path) = existing(d, &c.path, false) {
            consent.push(ConsentConfig { account: c.account.get_ref().clone(), path });
        }
    }
    (d.errors.len() == errors).then_some(DncConfig { plan, strict, lists, consent })
}

/// Resolve a configured path and check it is a file (or a directory).
fn existing(d: &mut Diagnostics<'_>, p: &Spanned<String>, dir: bool) -> Option<PathBuf> {
    let path = d.resolve(p.get_ref());
    let what = if dir { "directory" } else { "file" };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() == dir => Some(path),
        Ok(_) => {
            d.error(p.span(), format!("`{}` is not a {what}", path.display()));
            None
        }
        Err(e) => {
            d.error(p.span(), format!("cannot read {what} `{}`: {e}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::screen::dnc::testutil::tempdir;

    #[test]
    fn lists_and_consent_are_validated_with_lines() {
        let dir = tempdir();
        std::fs::write(dir.join("national.txt"), "+12125550100\n").unwrap();
        std::fs::create_dir(dir.join("deltas")).unwrap();
        let file = dir.join("sipguard.toml");
        let good = "[dnc]\ndefault_country = \"US\"\n\n[[dnc.list]]\nname = \"national\"\npath = \"national.txt\"\n\
                    deltas = \"deltas\"\naccounts = [\"acme\"]\n\n[[dnc.consent]]\naccount = \"acme\"\npath = \"national.txt\"\n";
        let cfg = Config::parse(&file, good).unwrap().dnc.unwrap();
        assert_eq!(cfg.plan.unwrap().country_code, 1);
        let l = &cfg.lists[0];
        assert_eq!((&*l.name, &*l.response, l.path.clone()), ("national", "dnc", dir.join("national.txt")));
        assert_eq!((l.deltas.clone(), l.accounts.clone()), (Some(dir.join("deltas")), Some(vec!["acme".into()])));
        assert!(l.consent_applies && !l.strict);
        assert_eq!(cfg.consent[0].account, "acme");

        let bad = "[dnc]\ndefault_country = \"XX\"\n[[dnc.list]]\nname = \"a\"\npath = \"missing.txt\"\n\
                   [[dnc.list]]\nname = \"a\"\npath = \"national.txt\"\ndeltas = \"national.txt\"\naccounts = []\n";
        let errs: Vec<String> = Config::parse(&file, bad).unwrap_err().0.iter().map(|e| e.to_string()).collect();
        let f = file.display();
        assert!(
            errs.contains(&format!("{f}:2: unknown country `XX`: expected an ISO 3166 code such as \"US\"")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.starts_with(&format!("{f}:5: cannot read file"))), "{errs:?}");
        assert!(errs.contains(&format!("{f}:7: duplicate list name `a` (first at line 4)")), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{f}:9: ")) && e.contains("is not a directory")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.starts_with(&format!("{f}:10: accounts = []"))), "{errs:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
