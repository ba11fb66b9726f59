//! Complaint records as they come in: a JSON object (the API), a row of a simple
//! `time,caller,callee,category` CSV, or a row of the FTC reported-calls CSV. Every problem
//! names the field (JSON) or the line (files); nothing is guessed.
use super::index::Callee;
use crate::screen::number::{self, NumberPlan};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The fields a complaint object may carry.
pub const FIELDS: [&str; 8] = ["callee", "callee_area_code", "caller", "time", "call_id", "category", "source", "note"];
const MAX_CALL_ID: usize = 256;
const MAX_LABEL: usize = 64;
const MAX_NOTE: usize = 1024;
/// A complaint may be about a call up to this far ahead of our clock (clock skew).
const FUTURE_SLACK: Duration = Duration::from_secs(86_400);

/// A validated complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub caller: u64,
    pub callee: Callee,
    pub time: SystemTime,
    pub call_id: Option<String>,
    pub category: Option<String>,
    pub source: Option<String>,
    pub note: Option<String>,
}

/// A bad field: `field` is its JSON path (`complaints[3].callee` in an import).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {msg}")]
pub struct FieldError {
    pub field: String,
    pub msg: String,
    /// The record's position in an import.
    pub index: Option<usize>,
}

fn bad(prefix: &str, field: &str, msg: impl Into<String>) -> FieldError {
    FieldError { field: format!("{prefix}{field}"), msg: msg.into(), index: None }
}

/// Validate one complaint object; `prefix` is prepended to field names in errors.
pub fn record(v: &Value, plan: Option<&NumberPlan>, now: SystemTime, prefix: &str) -> Result<Record, FieldError> {
    let Some(o) = v.as_object() else {
        let at = prefix.trim_end_matches('.');
        return Err(FieldError { field: at.to_string(), msg: "expected a JSON object".into(), index: None });
    };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(prefix, k, format!("unknown field (expected one of {})", FIELDS.join(", "))));
    }
    let text = |k: &str, max: usize| -> Result<Option<String>, FieldError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(bad(prefix, k, "empty")),
            Some(Value::String(s)) if s.len() > max => Err(bad(prefix, k, format!("longer than {max} bytes"))),
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                Err(bad(prefix, k, "contains control characters"))
            }
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(bad(prefix, k, "expected a string")),
        }
    };
    let phone = |k: &str| -> Result<Option<u64>, FieldError> {
        match text(k, 64)? {
            None => Ok(None),
            Some(s) => {
                number::parse(&s, plan).map(Some).ok_or_else(|| bad(prefix, k, format!("`{s}` is not a phone number")))
            }
        }
    };
    let caller = phone("caller")?.ok_or_else(|| bad(prefix, "caller", "missing"))?;
    let callee = match (phone("callee")?, text("callee_area_code", 8)?) {
        (Some(n), None) => Callee::Number(n),
        (None, Some(a)) => {
            Callee::Prefix(
                a.trim_start_matches('+').parse::<u64>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    bad(prefix, "callee_area_code", format!("`{a}` is not an area code such as 1212"))
                })?,
            )
        }
        (Some(_), Some(_)) => return Err(bad(prefix, "callee_area_code", "give callee or callee_area_code, not both")),
        (None, None) => return Err(bad(prefix, "callee", "missing")),
    };
    let time_text = text("time", 64)?.ok_or_else(|| bad(prefix, "time", "missing"))?;
    let time = parse_time(&time_text)
        .ok_or_else(|| bad(prefix, "time", format!("`{time_text}` is not a time such as 2026-12-02T10:00:00Z")))?;
    if time > now + FUTURE_SLACK {
        return Err(bad(prefix, "time", format!("`{time_text}` is in the future")));
    }
    Ok(Record {
        caller,
        callee,
        time,
        call_id: text("call_id", MAX_CALL_ID)?,
        category: text("category", MAX_LABEL)?,
        source: text("source", MAX_LABEL)?,
        note: text("note", MAX_NOTE)?,
    })
}

/// RFC 3339, or `YYYY-MM-DD HH:MM:SS` / `YYYY-MM-DD` in UTC (the FTC's dates).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let secs = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.timestamp()
    } else if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        t.and_utc().timestamp()
    } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)?.and_utc().timestamp()
    } else {
        return None;
    };
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The file formats `sipguard complaint import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `time,caller,callee,category` (category optional; a header line is allowed).
    Csv,
    /// The FTC Do Not Call reported-calls data (header line naming the columns).
    Ftc,
}

/// A line of an import file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct LineError {
    pub line: usize,
    pub msg: String,
}

/// The complaint objects of an import file, each with its line (1-based). Values are not
/// validated here (numbers need the proxy's number plan): the proxy names the bad field and
/// the caller maps the record back to its line.
/// A complaint object of an import file, with its line (1-based).
pub type LineRecord = (usize, Map<String, Value>);

pub fn parse_file(text: &str, format: Format) -> Result<Vec<LineRecord>, LineError> {
    let mut out = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        let fields = split_csv(raw).ok_or_else(|| LineError { line, msg: "unbalanced quotes".into() })?;
        match format {
            Format::Csv => {
                if out.is_empty() && header.is_none() && fields.first().is_some_and(|f| f.eq_ignore_ascii_case("time"))
                {
                    header = Some(fields);
                    continue;
                }
                if !(3..=4).contains(&fields.len()) {
                    return Err(LineError {
                        line,
                        msg: format!("expected time,caller,callee[,category]: {} fields", fields.len()),
                    });
                }
                let mut o = Map::new();
                for (k, v) in ["time", "caller", "callee", "category"].iter().zip(&fields) {
                    if !v.is_empty() {
                        o.insert((*k).into(), Value::String(v.clone()));
                    }
                }
                o.insert("source".into(), Value::String("csv".into()));
                out.push((line, o));
            }
            Format::Ftc => match &header {
                None => header = Some(fields.iter().map(|f| f.to_ascii_lowercase()).collect()),
                Some(h) => out.push((line, ftc_row(h, &fields, line)?)),
            },
        }
    }
    if format == Format::Ftc && header.is_none() {
        return Err(LineError { line: 1, msg: "no header line (Company_Phone_Number,...,Violation_Date,...)".into() });
    }
    Ok(out)
}

/// One FTC row: the company number is the caller, the violation date the time, the
/// consumer's area code all there is of the callee.
fn ftc_row(header: &[String], fields: &[String], line: usize) -> Result<Map<String, Value>, LineError> {
    let col = |name: &str| header.iter().position(|h| h == name).and_then(|i| fields.get(i)).filter(|v| !v.is_empty());
    let need = |name: &str| col(name).ok_or_else(|| LineError { line, msg: format!("no {name} value") });
    let mut o = Map::new();
    let caller = need("company_phone_number")?;
    let digits: String = caller.chars().filter(char::is_ascii_digit).collect();
    // The FTC writes US numbers as ten digits.
    let caller = if digits.len() == 10 && !caller.starts_with('+') { format!("+1{digits}") } else { caller.clone() };
    o.insert("caller".into(), Value::String(caller));
    let time = col("violation_date")
        .or_else(|| col("created_date"))
        .ok_or_else(|| LineError { line, msg: "no violation_date value".into() })?;
    o.insert("time".into(), Value::String(time.clone()));
    let area = need("consumer_area_code")?;
    o.insert("callee_area_code".into(), Value::String(format!("1{area}")));
    if let Some(s) = col("subject") {
        o.insert("category".into(), Value::String(s.chars().take(MAX_LABEL).collect()));
    }
    if let Some(r) = col("recorded_message_or_robocall") {
        o.insert("note".into(), Value::String(format!("robocall: {r}")));
    }
    o.insert("source".into(), Value::String("ftc".into()));
    Ok(o)
}

/// Split one CSV line: commas, fields optionally in double quotes (`""` inside is a quote).
/// None when a quote is left open.
fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => out.push(std::mem::take(&mut cur).trim().to_string()),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(cur.trim().to_string());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> SystemTime {
        parse_time("2026-12-02T12:00:00Z").unwrap()
    }

    fn rec(v: Value) -> Result<Record, String> {
        record(&v, None, now(), "").map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_record() {
        let r = rec(json!({"callee":"+13125550199","caller":"+1 (212) 555-0100","time":"2026-12-02T10:00:00+01:00",
            "call_id":"abc@h","category":"energy","source":"app","note":"rude"}))
        .unwrap();
        assert_eq!((r.caller, r.callee), (12125550100, Callee::Number(13125550199)));
        assert_eq!(r.time, parse_time("2026-12-02T09:00:00Z").unwrap());
        assert_eq!(r.call_id.as_deref(), Some("abc@h"));
    }

    #[test]
    fn bad_records_name_the_field() {
        let base = json!({"callee":"+13125550199","caller":"+12125550100","time":"2026-12-02T10:00:00Z"});
        let with = |k: &str, v: Value| {
            let mut o = base.clone();
            o[k] = v;
            rec(o).unwrap_err()
        };
        assert!(with("callee", json!("12")).starts_with("callee: `12` is not a phone number"));
        assert!(with("caller", json!(5)).starts_with("caller: expected a string"));
        assert!(with("time", json!("yesterday")).starts_with("time: `yesterday` is not a time"));
        assert!(with("time", json!("2027-01-01T00:00:00Z")).contains("in the future"));
        assert!(with("bogus", json!("x")).starts_with("bogus: unknown field"));
        assert!(with("call_id", json!("x".repeat(300))).contains("longer than 256"));
        assert!(with("note", json!("a\nb")).contains("control characters"));
        assert!(with("callee_area_code", json!("1212")).contains("not both"));
        let mut o = base.clone();
        o.as_object_mut().unwrap().remove("time");
        assert_eq!(rec(o).unwrap_err(), "time: missing");
        assert_eq!(rec(json!([1])).unwrap_err(), ": expected a JSON object");
        let e = record(&json!({"caller":"x"}), None, now(), "complaints[3].").unwrap_err();
        assert_eq!(e.field, "complaints[3].caller");
    }

    #[test]
    fn simple_csv_with_or_without_header() {
        let text = "time,caller,callee,category\n2026-12-01T10:00:00Z,+12125550100,+13125550199,energy\n\n\
                    2026-12-01 11:00:00,+12125550100,+13125550198\n";
        let rows = parse_file(text, Format::Csv).unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(rows[0].1["category"], "energy");
        assert!(rows[1].1.get("category").is_none());
        let e = parse_file("2026-12-01T10:00:00Z,+12125550100\n", Format::Csv).unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_file("a,b,c\n\"x,y,z\n", Format::Csv).unwrap_err();
        assert_eq!(e.to_string(), "line 2: unbalanced quotes");
    }

    #[test]
    fn ftc_rows() {
        let text = "Company_Phone_Number,Created_Date,Violation_Date,Consumer_City,Consumer_State,Consumer_Area_Code,Subject,Recorded_Message_Or_Robocall\n\
                    2125550100,2026-12-01 12:00:00,2026-12-01 10:00:00,Chicago,IL,312,\"Reducing your debt (credit cards, mortgage)\",Y\n\
                    ,2026-12-01 12:00:00,2026-12-01 10:00:00,Chicago,IL,312,x,N\n";
        let e = parse_file(text, Format::Ftc).unwrap_err();
        assert_eq!(e, LineError { line: 3, msg: "no company_phone_number value".into() });
        let ok: String = text.lines().take(2).collect::<Vec<_>>().join("\n");
        let rows = parse_file(&ok, Format::Ftc).unwrap();
        let o = Value::Object(rows[0].1.clone());
        let r = record(&o, None, now(), "").unwrap();
        assert_eq!((r.caller, r.callee), (12125550100, Callee::Prefix(1312)));
        assert_eq!(r.time, parse_time("2026-12-01T10:00:00Z").unwrap());
        assert_eq!(r.category.as_deref(), Some("Reducing your debt (credit cards, mortgage)"));
        assert_eq!(r.note.as_deref(), Some("robocall: Y"));
        assert!(parse_file("", Format::Ftc).is_err());
    }
}
