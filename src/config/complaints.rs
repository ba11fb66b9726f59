//! `[complaints]`: intake of callee complaints, their attribution to the account that placed
//! the call, and what a complaint does. On when the section is present.
use super::{Diagnostics, Spanned};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
pub struct RawComplaints {
    pub callee_to_dnc: Option<Spanned<bool>>,
    pub by_category: Option<Spanned<bool>>,
    pub suspend_account_after: Option<Spanned<i64>>,
    pub window_days: Option<Spanned<i64>>,
    pub suspend_caller_id_after: Option<Spanned<i64>>,
    pub suspend_minutes: Option<Spanned<i64>>,
    pub match_minutes: Option<Spanned<i64>>,
    pub index_days: Option<Spanned<i64>>,
    pub max_index_entries: Option<Spanned<i64>>,
    pub max_complaints: Option<Spanned<i64>>,
}

/// The validated section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComplaintsConfig {
    /// The complainant's number goes on the account's own `complaints` list.
    pub callee_to_dnc: bool,
    /// ... and on that of every account of the same category.
    pub by_category: bool,
    /// Complaints within `window` that suspend the account; 0: never.
    pub suspend_account_after: u32,
    pub window: Duration,
    /// Complaints within `window` about one caller ID that suspend it; 0: never.
    pub suspend_caller_id_after: u32,
    /// How long a complaint suspension lasts; None: until lifted.
    pub suspend_for: Option<Duration>,
    /// How far a complaint's time may be from the forwarded call it names.
    pub match_window: Duration,
    /// How long forwarded calls stay in the attribution index.
    pub index_for: Duration,
    pub max_index_entries: usize,
    /// Complaints kept; past it new ones are refused (507).
    pub max_complaints: usize,
}

pub const DEFAULT_MAX_INDEX_ENTRIES: i64 = 2_000_000;
pub const DEFAULT_MAX_COMPLAINTS: i64 = 1_000_000;

impl Default for ComplaintsConfig {
    fn default() -> Self {
        ComplaintsConfig {
            callee_to_dnc: true,
            by_category: false,
            suspend_account_after: 2,
            window: Duration::from_secs(30 * 86_400),
            suspend_caller_id_after: 1,
            suspend_for: None,
            match_window: Duration::from_secs(10 * 60),
            index_for: Duration::from_secs(7 * 86_400),
            max_index_entries: DEFAULT_MAX_INDEX_ENTRIES as usize,
            max_complaints: DEFAULT_MAX_COMPLAINTS as usize,
        }
    }
}

pub fn validate(raw: &RawComplaints, d: &mut Diagnostics<'_>) -> ComplaintsConfig {
    let flag = |v: &Option<Spanned<bool>>, default: bool| v.as_ref().map_or(default, |s| *s.get_ref());
    let int = |d: &mut Diagnostics<'_>, v: &Option<Spanned<i64>>, key: &str, default: i64, min: i64, max: i64| {
        u64::try_from(d.int(v, &format!("complaints.{key}"), default, min, max)).unwrap_or(0)
    };
    let days = |n: u64| Duration::from_secs(n * 86_400);
    let suspend_minutes = int(d, &raw.suspend_minutes, "suspend_minutes", 0, 0, 10 * 366 * 24 * 60);
    ComplaintsConfig {
        callee_to_dnc: flag(&raw.callee_to_dnc, true),
        by_category: flag(&raw.by_category, false),
        suspend_account_after: int(d, &raw.suspend_account_after, "suspend_account_after", 2, 0, 1_000_000) as u32,
        window: days(int(d, &raw.window_days, "window_days", 30, 1, 3660)),
        suspend_caller_id_after: int(d, &raw.suspend_caller_id_after, "suspend_caller_id_after", 1, 0, 1_000_000)
            as u32,
        suspend_for: (suspend_minutes > 0).then(|| Duration::from_secs(suspend_minutes * 60)),
        match_window: Duration::from_secs(60 * int(d, &raw.match_minutes, "match_minutes", 10, 1, 24 * 60)),
        index_for: days(int(d, &raw.index_days, "index_days", 7, 1, 90)),
        max_index_entries: int(
            d,
            &raw.max_index_entries,
            "max_index_entries",
            DEFAULT_MAX_INDEX_ENTRIES,
            1_000,
            200_000_000,
        ) as usize,
        max_complaints: int(d, &raw.max_complaints, "max_complaints", DEFAULT_MAX_COMPLAINTS, 1, 100_000_000) as usize,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "[screening]\nunknown_account = \"forward\"\n";

    #[test]
    fn defaults_and_bad_values_with_lines() {
        let c = Config::parse(Path::new("t.toml"), &format!("{BASE}[complaints]\n")).unwrap();
        assert_eq!(c.complaints, Some(super::ComplaintsConfig::default()));
        let text = format!("{BASE}[complaints]\nwindow_days = 0\nmatch_minutes = -3\ncallee_to_dnc = \"yes\"\n");
        let e = Config::parse(Path::new("t.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("t.toml:6:"), "{e}");
        let text = format!("{BASE}[complaints]\nwindow_days = 0\nmatch_minutes = -3\n");
        let e = Config::parse(Path::new("t.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("t.toml:4: complaints.window_days = 0: must be between 1 and 3660"), "{e}");
        assert!(e.contains("t.toml:5: complaints.match_minutes = -3"), "{e}");
    }

    #[test]
    fn the_complaints_list_has_a_response_section_of_its_own() {
        let text = format!("{BASE}[complaints]\n[responses.complaints]\ncode = 603\n");
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        let r = c.screening.unwrap().responses;
        assert_eq!(r.named_or_dnc(crate::screen::complaints::lists::LIST_NAME).code, 603);
        assert_eq!(r.named_or_dnc("dnc").code, 608, "the dnc rule keeps its own");
        let text = format!("{BASE}[responses.complaints]\ncode = 603\n");
        let e = Config::parse(Path::new("t.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("t.toml:3: [responses.complaints] answers callees on complaints lists"), "{e}");
    }

    #[test]
    fn complaints_need_screening() {
        let e = Config::parse(Path::new("t.toml"), "[server]\n\n[complaints]\n").unwrap_err().to_string();
        assert!(e.contains("t.toml:3: [complaints] needs a [screening] section"), "{e}");
    }
}
