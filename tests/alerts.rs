//! The alert rules of contrib/prometheus/alerts.yml stay silent on normal traffic. Two real
//! proxies (UDP and TCP) carry sipp calls, forwarded ones and local rejects (whose ACKs are
//! absorbed, not dropped), and their /metrics is scraped between the phases. The scrapes
//! become the input series of a `promtool test rules` file (scrape i at minute i) that
//! evaluates every alert at every minute, with the `for:` clauses removed so that an
//! expression true at any one point fails the test. Also: every metric exported, and every
//! metric the dashboard and the alerts name, is documented in docs/operations.md.
mod common;

use common::{Ports, Sipguard, Sipp, require_sipp};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Account acct0001 owns +12125550100; +13125550111 is on the do-not-call list.
const TEMPLATE: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}", "tcp:127.0.0.1:{tcp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=TRANSPORT"

[log]
level = "warn"
decisions = "{dir}/decisions.jsonl"

[admin]
listen = "127.0.0.1:{admin_port}"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"

[[dnc.list]]
name = "national"
path = "dnc.txt"
"#;

const OWNED: &str = "account,number\nacct0001,+12125550100\n";
const DNC: &str = "+13125550111\n+13125550112\n";
const FORWARDED: u64 = 40;
/// Rejected per kind: caller ID not owned, callee on the list.
const REJECTED: u64 = 10;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// True when promtool can be used; without it the promtool part is skipped with a message,
/// unless SIPGUARD_REQUIRE_PROMTOOL=1 (CI), where its absence fails.
fn require_promtool() -> bool {
    if Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("SIPGUARD_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1") {
        panic!("promtool not found but SIPGUARD_REQUIRE_PROMTOOL=1 (apt-get install prometheus)");
    }
    eprintln!("SKIP: promtool not found (apt-get install prometheus): alert expressions not evaluated");
    false
}

/// One scrape: series (name and labels, as exposed) to value, the type of each metric, and
/// the wall clock when it was taken.
struct Scrape {
    series: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    unix: f64,
}

fn scrape(sg: &Sipguard) -> Scrape {
    let (code, body) = common::http(sg, "GET", "/metrics", None);
    assert_eq!(code, 200, "{body}");
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let mut series = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap_or((t, ""));
            types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (s, v) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line `{line}`"));
            let v: f64 = v.parse().unwrap_or_else(|e| panic!("`{line}`: {e}"));
            series.insert(s.to_string(), v);
        }
    }
    Scrape { series, types, unix }
}

fn name_of(series: &str) -> &str {
    series.split_once('{').map_or(series, |(n, _)| n)
}

/// The sum of the series of `name` whose labels contain `label` (e.g. `reason="x"`).
fn sum(s: &Scrape, name: &str, label: &str) -> f64 {
    s.series.iter().filter(|(k, _)| name_of(k) == name && k.contains(label)).map(|(_, v)| v).sum()
}

/// The type of the metric a series belongs to (`_bucket`, `_sum`, `_count` of a histogram).
fn type_of<'a>(scrapes: &'a [Scrape], series: &str) -> &'a str {
    let name = name_of(series);
    let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
    scrapes.iter().find_map(|s| s.types.get(name).or_else(|| s.types.get(base))).map_or("untyped", String::as_str)
}

fn is_timestamp(series: &str) -> bool {
    let n = name_of(series);
    n.ends_with("_timestamp_seconds") || n == "sipguard_start_time_seconds"
}

/// promtool input series for the scrapes of one instance, one minute apart. A counter absent
/// from a scrape is 0 there (it had not counted yet: a first increment then shows as a
/// rise, as with a recorder that registers every series at 0); an absent gauge has no value.
/// Timestamps keep their distance to the scrape's clock, moved to the test's clock (which
/// starts at 0), so that `time() - built` means what it means in production.
fn input_series(instance: &str, scrapes: &[Scrape], out: &mut String) {
    let all: BTreeSet<&String> = scrapes.iter().flat_map(|s| s.series.keys()).collect();
    let up = vec!["1"; scrapes.len()].join(" ");
    out.push_str(&format!(
        "      - series: 'up{{job=\"sipguard\",instance=\"{instance}\"}}'\n        values: '{up}'\n"
    ));
    for key in all {
        let counter = matches!(type_of(scrapes, key), "counter" | "histogram" | "summary");
        let values: Vec<String> = scrapes
            .iter()
            .enumerate()
            .map(|(i, s)| match s.series.get(key) {
                Some(v) if is_timestamp(key) => format!("{}", v - s.unix + 60.0 * i as f64),
                Some(v) => format!("{v}"),
                None if counter => "0".into(),
                None => "_".into(),
            })
            .collect();
        let labelled = match key.split_once('{') {
            Some((n, rest)) => format!("{n}{{job=\"sipguard\",instance=\"{instance}\",{rest}"),
            None => format!("{key}{{job=\"sipguard\",instance=\"{instance}\"}}"),
        };
        let labelled = labelled.replace('\'', "''");
        out.push_str(&format!("      - series: '{labelled}'\n        values: '{}'\n", values.join(" ")));
    }
}

fn alert_names(rules: &str) -> Vec<String> {
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_string()).collect()
}

/// Runs normal traffic through a proxy on `transport`, scraping before, between and after
/// the phases; returns the scrapes.
fn traffic(transport: &str) -> Vec<Scrape> {
    let config = TEMPLATE.replace("TRANSPORT", transport);
    let sg = Sipguard::start_with(&config, Ports::allocate(), &[("owned.csv", OWNED), ("dnc.txt", DNC)]);
    let sipp_t: &[&str] = if transport == "tcp" { &["-t", "t1"] } else { &[] };
    let target = if transport == "tcp" { sg.tcp_addr() } else { sg.udp_addr() };
    let uas = Sipp::uas_with("uas_basic.xml", sg.ports().upstream, sipp_t);
    let uas_addr = uas.addr().to_string();
    let run = |scenario: &str, row: &str, n: u64| {
        let rows = vec![row; n as usize];
        let m = n.to_string();
        let mut args = vec!["-m", &m, "-r", "50", "-key", "uas", &uas_addr];
        args.extend_from_slice(sipp_t);
        let stats = Sipp::uac_with_calls(scenario, target, &rows, &args);
        assert_eq!((stats.successful, stats.failed), (n, 0), "{transport} {scenario} {row}: {stats:#?}");
        stats
    };
    let mut scrapes = vec![scrape(&sg)];
    run("uac_basic.xml", "acct0001;+12125550100;+13125550199", FORWARDED);
    scrapes.push(scrape(&sg));
    let spoofed = run("uac_reject.xml", "acct0001;+12125550142;+13125550199", REJECTED);
    let listed = run("uac_reject.xml", "acct0001;+12125550100;+13125550111", REJECTED);
    assert_eq!(listed.responses_with(608), REJECTED, "{listed:#?}");
    let rejects: u64 = spoofed.responses.iter().filter(|(c, _)| **c >= 400).map(|(_, n)| n).sum();
    assert_eq!(rejects, REJECTED, "{spoofed:#?}");
    scrapes.push(scrape(&sg));
    run("uac_screened.xml", "acct0001;+12125550100;+13125550199", REJECTED);
    run("uac_screened.xml", "acct0001;+12125550100;+13125550112", REJECTED);
    scrapes.push(scrape(&sg));
    scrapes.push(scrape(&sg));

    // The ACKs of the local rejects are absorbed, not dropped; nothing is dropped at all.
    let last = scrapes.last().unwrap_or_else(|| unreachable!());
    let drops: Vec<(&String, &f64)> =
        last.series.iter().filter(|(k, v)| name_of(k) == "sipguard_drops_total" && **v > 0.0).collect();
    assert!(drops.is_empty(), "{transport}: drops on normal traffic: {drops:?}");
    assert_eq!(sum(last, "sipguard_absorbed_total", "reason=\"ack_absorbed\""), (3 * REJECTED) as f64, "{transport}");
    assert_eq!(sum(last, "sipguard_replies_total", ""), (3 * REJECTED) as f64, "{transport}");
    assert_eq!(
        sum(last, "sipguard_verdicts_total", "verdict=\"reject\""),
        (3 * REJECTED) as f64,
        "{transport}: {:?}",
        last.series
    );
    scrapes
}

#[test]
fn alerts_stay_silent_on_normal_sipp_traffic() {
    if !require_sipp() {
        return;
    }
    let udp = traffic("udp");
    let tcp = traffic("tcp");

    // Every metric exported is documented.
    let docs = read("docs/operations.md");
    let exported: BTreeSet<&String> = udp.iter().chain(&tcp).flat_map(|s| s.types.keys()).collect();
    let undocumented: Vec<_> = exported.iter().filter(|n| !docs.contains(&format!("`{n}`"))).collect();
    assert!(undocumented.is_empty(), "metrics missing from docs/operations.md: {undocumented:?}");

    if !require_promtool() {
        return;
    }
    let rules = read("contrib/prometheus/alerts.yml");
    let names = alert_names(&rules);
    assert!(names.len() >= 10, "{names:?}");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Without `for:`, an alert fires at the first evaluation its expression is true.
    let immediate: String =
        rules.lines().filter(|l| !l.trim_start().starts_with("for:")).map(|l| format!("{l}\n")).collect();
    let rules_path = dir.path().join("alerts.yml");
    std::fs::write(&rules_path, immediate).unwrap_or_else(|e| panic!("{e}"));

    let mut test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
        rules_path.display()
    );
    input_series("udp", &udp, &mut test);
    input_series("tcp", &tcp, &mut test);
    test.push_str("    alert_rule_test:\n");
    for minute in 0..udp.len().max(tcp.len()) {
        for name in &names {
            test.push_str(&format!(
                "      - eval_time: {minute}m\n        alertname: {name}\n        exp_alerts: []\n"
            ));
        }
    }
    let test_path = dir.path().join("normal_traffic_test.yml");
    std::fs::write(&test_path, &test).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test_path)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}\n--- test file ---\n{test}");
}

/// Metric names in a PromQL-bearing text: `sipguard_` followed by name characters, with the
/// histogram suffixes taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("sipguard_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboard_and_alerts_use_documented_metrics() {
    let docs = read("docs/operations.md");
    let rules = read("contrib/prometheus/alerts.yml");
    let dashboard = read("contrib/grafana/sipguard.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap_or_else(|e| panic!("sipguard.json: {e}"));
    let panels = json["panels"].as_array().map_or(0, Vec::len);
    assert!(panels >= 8, "{panels} panels");
    let mut exprs = String::new();
    for p in json["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap_or(""));
            exprs.push('\n');
        }
    }
    let in_rules = metric_names(&rules);
    let in_dashboard = metric_names(&exprs);
    assert!(in_dashboard.len() >= 10, "{in_dashboard:?}");
    let undocumented: Vec<_> =
        in_rules.iter().chain(&in_dashboard).filter(|n| !docs.contains(&format!("`{n}`"))).collect();
    assert!(undocumented.is_empty(), "not in docs/operations.md: {undocumented:?}");
    // The docs point at the rules, and the rules file names each alert once.
    assert!(docs.contains("contrib/prometheus/alerts.yml"));
    let names = alert_names(&rules);
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");

    // Every panel's query is valid PromQL once Grafana's variables are filled in: promtool
    // parses each as a recording rule.
    if !require_promtool() {
        return;
    }
    let mut rec = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.lines().filter(|l| !l.is_empty()).enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$__interval", "1m")
            .replace("$instance", ".*")
            .replace('\'', "''");
        rec.push_str(&format!("      - record: dashboard_query_{i}\n        expr: '{e}'\n"));
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("dashboard_rules.yml");
    std::fs::write(&path, &rec).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new("promtool").args(["check", "rules"]).arg(&path).output();
    let out = out.unwrap_or_else(|e| panic!("promtool: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}\n{rec}");
}
