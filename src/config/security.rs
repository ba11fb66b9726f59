//! `[security]`: flood and scanner defence. Absent: no rate limit, no scanner filter.
use super::{Diagnostics, Spanned};
use ipnet::IpNet;
use serde::Deserialize;
use std::time::Duration;

/// User-Agent substrings of SIP scanners (matched case-insensitively).
pub const DEFAULT_SCANNERS: [&str; 9] =
    ["friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr", "iwar", "sivus", "vaxsipuseragent", "smap"];

#[derive(Debug, Default, Deserialize)]
pub struct RawSecurity {
    pub per_source_per_second: Option<Spanned<i64>>,
    pub ban_seconds: Option<Spanned<i64>>,
    pub exempt: Option<Vec<Spanned<String>>>,
    pub scanner_user_agents: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    pub per_source_per_second: u32,
    pub ban: Duration,
    /// Configured exemptions; the upstream, relay_to, trusted_sources and the accounts'
    /// networks are added when the guard is built.
    pub exempt: Vec<IpNet>,
    /// Lower-cased.
    pub scanner_user_agents: Vec<String>,
}

pub fn validate(raw: &RawSecurity, d: &mut Diagnostics<'_>) -> Option<SecurityConfig> {
    let before = d.errors.len();
    let rate = d.int(&raw.per_source_per_second, "security.per_source_per_second", 100, 1, 1_000_000);
    let ban = d.int(&raw.ban_seconds, "security.ban_seconds", 30, 1, 86_400);
    let exempt = raw.exempt.as_deref().unwrap_or_default().iter().filter_map(|s| super::cidr(s, d)).collect();
    let scanner_user_agents = match &raw.scanner_user_agents {
        None => DEFAULT_SCANNERS.iter().map(|s| s.to_string()).collect(),
        Some(list) => list
            .iter()
            .filter_map(|s| {
                let v = s.get_ref().trim().to_ascii_lowercase();
                if v.is_empty() {
                    d.error(s.span(), "security.scanner_user_agents: an empty pattern would match every request");
                    None
                } else {
                    Some(v)
                }
            })
            .collect(),
    };
    (d.errors.len() == before).then_some(SecurityConfig {
        per_source_per_second: rate as u32,
        ban: Duration::from_secs(ban as u64),
        exempt,
        scanner_user_agents,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn defaults_and_errors() {
        let c = Config::parse(Path::new("c.toml"), "[security]\n").unwrap();
        let s = c.security.unwrap();
        assert_eq!((s.per_source_per_second, s.ban.as_secs()), (100, 30));
        assert!(s.scanner_user_agents.contains(&"friendly-scanner".to_string()));
        assert!(Config::parse(Path::new("c.toml"), "").unwrap().security.is_none());
        let e = Config::parse(
            Path::new("c.toml"),
            "[security]\nper_source_per_second = 0\nban_seconds = -1\nexempt = [\"x\"]\nscanner_user_agents = [\"\"]\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = e.0.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5], "{e}");
    }
}
