//! `sipguard top`: a live terminal view built from two scrapes of the admin `/metrics`:
//! calls/s, verdicts by rule, and the accounts with the most rejects, with their call
//! behaviour (ASR and ACD over the account's window, when it is tracked) and complaints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error(transparent)]
    Client(#[from] crate::admin_client::ClientError),
    #[error("/metrics answered: {0}")]
    Status(String),
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> &str {
        self.labels.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
    }
}

/// `GET /metrics` from the admin listener (`HOST:PORT`; names are resolved).
pub fn scrape(addr: &str, token: Option<&str>, timeout: Duration) -> Result<Vec<Sample>, TopError> {
    let r = crate::admin_client::request(addr, token, "GET", "/metrics", None, timeout)?;
    if r.status != 200 {
        return Err(TopError::Status(format!("HTTP {} {}", r.status, r.body.trim())));
    }
    Ok(parse(&r.body))
}

/// Parse the Prometheus text format; comments and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample { name: name.to_string(), labels, value })
}

/// `a="x",b="y"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_string(), value));
        s = rest.get(end + 1..)?.trim_start_matches(',');
    }
    Some(out)
}

/// Sum of the samples of `name` whose labels satisfy `keep`, grouped by `by`.
fn sum_by(
    samples: &[Sample],
    name: &str,
    keep: impl Fn(&Sample) -> bool,
    by: impl Fn(&Sample) -> String,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name && keep(s)) {
        *out.entry(by(s)).or_insert(0.0) += s.value;
    }
    out
}

fn total(samples: &[Sample], name: &str) -> f64 {
    samples.iter().filter(|s| s.name == name).fold(0.0, |acc, s| acc + s.value)
}

/// Per-second increase of each group between two scrapes.
fn rates(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, secs: f64) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            let prev = before.get(k).copied().unwrap_or(0.0);
            // A counter that went down means a restart: count from zero.
            let delta = if *v >= prev { v - prev } else { *v };
            (k.clone(), delta / secs.max(1e-9))
        })
        .collect()
}

/// One screen of the view from two scrapes `secs` apart.
pub fn render(before: &[Sample], after: &[Sample], secs: f64, top_n: usize) -> String {
    let rate = |name: &str| {
        let d = total(after, name) - total(before, name);
        d.max(0.0) / secs.max(1e-9)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "calls/s {:>8.1}   messages in/s {:>8.1}   out/s {:>8.1}   replies/s {:>6.1}   drops/s {:>6.1}   tcp {:>4}",
        rate("sipguard_verdicts_total"),
        rate("sipguard_messages_in_total"),
        rate("sipguard_messages_out_total"),
        rate("sipguard_replies_total"),
        rate("sipguard_drops_total"),
        total(after, "sipguard_tcp_connections"),
    );
    let verdicts = |s: &[Sample]| {
        sum_by(
            s,
            "sipguard_verdicts_total",
            |_| true,
            |x| format!("{:<22} {:<13}", x.label("rule"), x.label("verdict")),
        )
    };
    let (vb, va) = (verdicts(before), verdicts(after));
    let vr = rates(&vb, &va, secs);
    let _ = writeln!(out, "\n{:<22} {:<13} {:>10} {:>12}", "RULE", "VERDICT", "/s", "TOTAL");
    let mut rows: Vec<(&String, &f64)> = va.iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(a.1));
    for (k, t) in rows {
        let r = vr.get(k).copied().unwrap_or(0.0);
        let _ = writeln!(out, "{k} {r:>10.1} {t:>12}");
    }
    let by_account = |s: &[Sample], reject: bool| {
        sum_by(
            s,
            "sipguard_verdicts_total",
            |x| !reject || x.label("verdict") == "reject",
            |x| x.label("account").to_string(),
        )
    };
    let (rb, ra) = (by_account(before, true), by_account(after, true));
    let (cb, ca) = (by_account(before, false), by_account(after, false));
    let (rr, cr) = (rates(&rb, &ra, secs), rates(&cb, &ca, secs));
    let complaints = sum_by(after, "sipguard_complaints_total", |_| true, |x| x.label("account").to_string());
    let _ = writeln!(
        out,
        "\n{:<24} {:>10} {:>12} {:>10} {:>12} {:>7} {:>8} {:>10}",
        "ACCOUNT", "REJECTS/s", "REJECTS", "CALLS/s", "CALLS", "ASR", "ACD", "COMPLAINTS"
    );
    // Every account that screened a call, most rejects per second first, then most rejects.
    let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let mut accts: Vec<&String> = ca.keys().collect();
    accts.sort_by(|a, b| get(&rr, b).total_cmp(&get(&rr, a)).then(get(&ra, b).total_cmp(&get(&ra, a))));
    for acct in accts.into_iter().take(top_n) {
        let _ = writeln!(
            out,
            "{acct:<24} {:>10.1} {:>12} {:>10.1} {:>12} {:>7} {:>8} {:>10}",
            get(&rr, acct),
            get(&ra, acct),
            get(&cr, acct),
            get(&ca, acct),
            figure(after, "sipguard_behaviour_asr", acct, |v| format!("{:.1}%", v * 100.0)),
            figure(after, "sipguard_behaviour_acd_seconds", acct, |v| format!("{v:.1}s")),
            get(&complaints, acct),
        );
    }
    out
}

/// An account's behaviour gauge, formatted; `-` when not tracked or nothing to judge (NaN).
fn figure(samples: &[Sample], name: &str, account: &str, show: impl Fn(f64) -> String) -> String {
    samples
        .iter()
        .find(|s| s.name == name && s.label("account") == account)
        .filter(|s| s.value.is_finite())
        .map_or_else(|| "-".to_string(), |s| show(s.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE sipguard_verdicts_total counter
sipguard_verdicts_total{verdict="forward",rule="-",account="acme"} 10
sipguard_verdicts_total{verdict="reject",rule="quota",account="acme"} 4
sipguard_verdicts_total{verdict="reject",rule="dnc",account="beta"} 1
sipguard_verdicts_total{verdict="forward",rule="-",account="gamma"} 1
sipguard_tcp_connections 2
"#;
    const AFTER: &str = r#"sipguard_verdicts_total{verdict="forward",rule="-",account="acme"} 30
sipguard_verdicts_total{verdict="reject",rule="quota",account="acme"} 8
sipguard_verdicts_total{verdict="reject",rule="dnc",account="beta"} 11
sipguard_verdicts_total{verdict="forward",rule="-",account="gamma"} 5
sipguard_tcp_connections 3
sipguard_behaviour_asr{account="acme"} 0.6496
sipguard_behaviour_acd_seconds{account="acme"} 42.26
sipguard_behaviour_asr{account="beta"} NaN
sipguard_complaints_total{account="beta"} 2
"#;

    #[test]
    fn parses_labels_with_escapes() {
        let s = parse("m{a=\"x\\\"y\",b=\"z\"} 1.5\nplain 2\n# HELP x\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label("a"), "x\"y");
        assert_eq!(s[0].label("b"), "z");
        assert_eq!(s[0].value, 1.5);
        assert_eq!(s[1].name, "plain");
    }

    #[test]
    fn rates_and_top_accounts() {
        let out = render(&parse(BEFORE), &parse(AFTER), 2.0, 10);
        // 38 screened calls over 2 s.
        assert!(out.starts_with("calls/s     19.0"), "{out}");
        assert!(out.contains("tcp    3"), "{out}");
        // beta has the higher reject rate (5/s against 2/s), so it is listed first.
        let beta = out.find("beta").unwrap();
        let acme = out.rfind("acme").unwrap();
        assert!(beta < acme, "{out}");
        let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
        assert!(rows.contains(&vec!["-", "forward", "12.0", "35"]), "{out}");
        assert!(rows.contains(&vec!["beta", "5.0", "11", "5.0", "11", "-", "-", "2"]), "{out}");
        assert!(rows.contains(&vec!["acme", "2.0", "8", "12.0", "38", "65.0%", "42.3s", "0"]), "{out}");
        assert!(rows.contains(&vec!["gamma", "0.0", "0", "2.0", "5", "-", "-", "0"]), "{out}");
    }
}
