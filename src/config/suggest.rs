//! "Did you mean `owned`?" for an unknown config key: the nearest key documented in the same
//! section of config.example.toml. The example documents every key (tests/config_example.rs
//! keeps it so), commented-out ones included, so it is the list of valid names.

const EXAMPLE: &str = include_str!("../../config.example.toml");

/// The nearest valid key for `key` in the section `section` (dotted, array indexes dropped,
/// "" for the top level), if one is close enough to be a typo.
pub fn nearest(section: &str, key: &str) -> Option<&'static str> {
    static KNOWN: std::sync::OnceLock<Vec<(String, &'static str)>> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(documented);
    let last = section.rsplit('.').next().unwrap_or("");
    // A section the example shows only elsewhere (`account.quota` is `screening.quota`'s
    // shape), then any key at all.
    let mut candidates: Vec<&'static str> = known.iter().filter(|(s, _)| s == section).map(|&(_, k)| k).collect();
    if candidates.is_empty() {
        candidates = known.iter().filter(|(s, _)| s.rsplit('.').next() == Some(last)).map(|&(_, k)| k).collect();
    }
    if candidates.is_empty() {
        candidates = known.iter().map(|&(_, k)| k).collect();
    }
    // A key written without its unit (`shutdown_grace` for `shutdown_grace_seconds`).
    if let Some(c) = candidates.iter().find(|c| c.strip_prefix(key).is_some_and(|rest| rest.starts_with('_'))) {
        return Some(c);
    }
    let limit = (key.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != key)
        .map(|c| (distance(key, c), c))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// (section, key) pairs of the example; a section `[a.b]` or `[[a.b]]` also documents `b` as
/// a key of `a`. Response sections are all `responses.*`.
fn documented() -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    let mut section: &'static str = "";
    for raw in EXAMPLE.lines() {
        let line = raw.strip_prefix("# ").unwrap_or(raw).trim_start();
        if let Some(head) = line.strip_prefix('[') {
            let name = head.trim_start_matches('[');
            let Some(end) = name.find(']') else { continue };
            let name = &name[..end];
            section = if name.starts_with("responses.") { "responses.*" } else { name };
            let (parent, last) = name.rsplit_once('.').unwrap_or(("", name));
            if parent != "responses" {
                out.push((parent.to_string(), last));
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            continue;
        }
        out.push((section.to_string(), key));
        // An inline table documents its keys as a section of its own.
        if let Some(inner) = value.trim().strip_prefix('{') {
            let sub = if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
            for pair in inner.split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    out.push((sub.clone(), k.trim()));
                }
            }
        }
    }
    out
}

/// Edit distance counting a swap of two neighbours as one edit (optimal string alignment), so
/// `per_dya` is one typo away from `per_day`.
pub(super) fn distance(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_key_of_their_section() {
        assert_eq!(nearest("screening.checks", "ownd"), Some("owned"));
        assert_eq!(nearest("dnc.list", "delta"), Some("deltas"));
        assert_eq!(nearest("account.quota", "per_dya"), Some("per_day"));
        assert_eq!(nearest("server", "shutdown_grace"), Some("shutdown_grace_seconds"));
        assert_eq!(nearest("", "screning"), Some("screening"));
        assert_eq!(nearest("responses.*", "cod"), Some("code"));
        assert_eq!(nearest("server", "zzzzzz"), None);
    }

    #[test]
    fn distance_counts_swaps_once() {
        assert_eq!(distance("per_dya", "per_day"), 1);
        assert_eq!(distance("ownd", "owned"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
