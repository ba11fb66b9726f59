//! `sipguard complaint add | import | list | traceback`: complaints filed with, and read
//! from, a running proxy through its admin listener. Exit 0 when done, 1 when the proxy
//! refused the records (a bad field or line, named), 2 when it could not be asked.
use crate::admin_client::{self, ClientError};
use crate::screen::complaints::intake::{self, Format};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin listener of the running proxy (`[admin] listen`), e.g. localhost:9060.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9060")]
    pub admin: String,
    /// The admin token (`[admin] token`), if one is set.
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// `time,caller,callee,category` (category optional, header line allowed).
    Csv,
    /// The FTC Do Not Call reported-calls CSV (Company_Phone_Number, Violation_Date,
    /// Consumer_Area_Code, Subject, Recorded_Message_Or_Robocall, ...).
    Ftc,
}

#[derive(Debug, Subcommand)]
pub enum ComplaintCommand {
    /// File one complaint: attributed to the account that placed the call, acted on at once.
    Add {
        /// The complainant's number (who was called).
        #[arg(long, value_name = "NUMBER")]
        callee: String,
        /// The caller ID the complainant saw.
        #[arg(long, value_name = "NUMBER")]
        caller: String,
        /// When the call was (RFC 3339); now when left out.
        #[arg(long, value_name = "RFC3339")]
        time: Option<String>,
        /// The call's Call-ID, when known (a carrier's traceback request carries it).
        #[arg(long = "call-id", value_name = "ID")]
        call_id: Option<String>,
        /// What the call was about.
        #[arg(long, value_name = "C")]
        category: Option<String>,
        /// Where the complaint came from (e.g. app, carrier, regulator).
        #[arg(long, value_name = "S")]
        source: Option<String>,
        /// Free text.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// File every complaint of FILE, all or none: a bad line is named FILE:LINE.
    Import {
        /// The file of complaints, one per line.
        file: PathBuf,
        /// Its layout: `csv` (time,caller,callee,category) or `ftc` (the FTC reported-calls CSV).
        #[arg(long, value_enum, default_value = "csv")]
        format: ImportFormat,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List complaints: id, received, account, how attributed, caller, callee.
    List {
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
        /// Only those received at or after this time (RFC 3339 or Unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The decision record of the call a complaint was matched to (traceback).
    Traceback {
        /// The complaint's id, as `complaint add` or `complaint list` shows it.
        id: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ComplaintCliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Failed(String),
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Run one command. Ok(0) done, Ok(1) refused (the reason written to `err`).
pub fn run(
    cmd: ComplaintCommand,
    out: &mut impl std::io::Write,
    err: &mut impl std::io::Write,
) -> Result<u8, ComplaintCliError> {
    match cmd {
        ComplaintCommand::Add { callee, caller, time, call_id, category, source, note, admin } => {
            let time = time.unwrap_or_else(|| crate::screen::suspension::rfc3339(std::time::SystemTime::now()));
            let mut o = Map::new();
            for (k, v) in [
                ("callee", Some(callee)),
                ("caller", Some(caller)),
                ("time", Some(time)),
                ("call_id", call_id),
                ("category", category),
                ("source", source.or(Some("cli".into()))),
                ("note", note),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), Value::String(v));
                }
            }
            let r = post(&admin, "/v1/complaints", &Value::Object(o))?;
            match r.status {
                201 => {
                    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
                    print_filed(out, &v);
                    Ok(0)
                }
                400 | 404 | 507 => {
                    let _ = writeln!(err, "refused: {}", message(&r.body));
                    Ok(1)
                }
                s => Err(ComplaintCliError::Failed(format!("{s}: {}", message(&r.body)))),
            }
        }
        ComplaintCommand::Import { file, format, admin } => {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| ComplaintCliError::Failed(format!("{name}: {e}")))?;
            let format = match format {
                ImportFormat::Csv => Format::Csv,
                ImportFormat::Ftc => Format::Ftc,
            };
            let rows = match intake::parse_file(&text, format) {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = writeln!(err, "{name}:{}: {}", e.line, e.msg);
                    return Ok(1);
                }
            };
            if rows.is_empty() {
                let _ = writeln!(out, "{name}: no complaints");
                return Ok(0);
            }
            let body = json!({ "complaints": rows.iter().map(|(_, o)| Value::Object(o.clone())).collect::<Vec<_>>() });
            let r = post(&admin, "/v1/complaints/import", &body)?;
            match r.status {
                201 => {
                    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
                    let list = v["complaints"].as_array().cloned().unwrap_or_default();
                    let attributed = list.iter().filter(|c| !c["attribution"]["account"].is_null()).count();
                    let _ = writeln!(out, "{name}: filed {} complaints, {attributed} attributed", list.len());
                    Ok(0)
                }
                400 => {
                    let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
                    let line = v["index"].as_u64().and_then(|i| rows.get(i as usize)).map(|(l, _)| *l);
                    let msg = v["error"].as_str().unwrap_or(r.body.trim());
                    // `complaints[3].callee: ...` becomes `callee: ...` at the record's line.
                    let msg = msg.split_once("].").map_or(msg, |(_, rest)| rest);
                    match line {
                        Some(l) => writeln!(err, "{name}:{l}: {msg} (nothing imported)"),
                        None => writeln!(err, "{name}: {msg} (nothing imported)"),
                    }
                    .ok();
                    Ok(1)
                }
                404 | 413 | 507 => {
                    let _ = writeln!(err, "{name}: refused: {} (nothing imported)", message(&r.body));
                    Ok(1)
                }
                s => Err(ComplaintCliError::Failed(format!("{s}: {}", message(&r.body)))),
            }
        }
        ComplaintCommand::List { account, since, json, admin } => {
            let mut q = Vec::new();
            if let Some(a) = account {
                q.push(format!("account={}", admin_client::encode(&a)));
            }
            if let Some(s) = since {
                q.push(format!("since={}", admin_client::encode(&s)));
            }
            let path =
                if q.is_empty() { "/v1/complaints".to_string() } else { format!("/v1/complaints?{}", q.join("&")) };
            let r = admin_client::request(&admin.admin, admin.token.as_deref(), "GET", &path, None, TIMEOUT)?;
            if !r.ok() {
                let _ = writeln!(err, "refused: {}", message(&r.body));
                return Ok(1);
            }
            if json {
                let _ = writeln!(out, "{}", r.body.trim());
                return Ok(0);
            }
            let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
            let rows = v["complaints"].as_array().cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<6} {:<21} {:<14} {:<8} {:<16} {:<16} CATEGORY",
                "ID", "RECEIVED", "ACCOUNT", "BY", "CALLER", "CALLEE"
            );
            for c in &rows {
                let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
                let callee =
                    c["callee"].as_str().map_or_else(|| format!("{}*", s(&c["callee_area_code"])), str::to_string);
                let _ = writeln!(
                    out,
                    "{:<6} {:<21} {:<14} {:<8} {:<16} {:<16} {}",
                    c["id"],
                    s(&c["received_rfc3339"]),
                    s(&c["attribution"]["account"]),
                    s(&c["attribution"]["by"]),
                    s(&c["caller"]),
                    callee,
                    s(&c["category"]),
                );
            }
            let _ = writeln!(out, "{} complaints", v["count"].as_u64().unwrap_or(rows.len() as u64));
            Ok(0)
        }
        ComplaintCommand::Traceback { id, admin } => {
            let path = format!("/v1/complaints/{id}/traceback");
            let r = admin_client::request(&admin.admin, admin.token.as_deref(), "GET", &path, None, TIMEOUT)?;
            if !r.ok() {
                let _ = writeln!(err, "{}", message(&r.body));
                return Ok(1);
            }
            let _ = writeln!(out, "{}", r.body.trim());
            Ok(0)
        }
    }
}

fn post(admin: &AdminArgs, path: &str, body: &Value) -> Result<admin_client::Reply, ComplaintCliError> {
    let text = body.to_string();
    Ok(admin_client::request(&admin.admin, admin.token.as_deref(), "POST", path, Some(&text), TIMEOUT)?)
}

/// The `error` of a JSON answer, else the body.
fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

fn print_filed(out: &mut impl std::io::Write, v: &Value) {
    let a = &v["attribution"];
    match a["account"].as_str() {
        Some(acct) => {
            writeln!(out, "complaint #{} attributed to {acct} by {}", v["id"], a["by"].as_str().unwrap_or("?"))
        }
        None => writeln!(out, "complaint #{} unattributed (kept and counted)", v["id"]),
    }
    .ok();
    for e in v["effects"].as_array().into_iter().flatten() {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
        match e["effect"].as_str() {
            Some("listed") => {
                let whose = e["account"].as_str().map_or_else(|| format!("category {}", s("category")), str::to_string);
                writeln!(out, "  listed {} on the complaints list of {whose}", s("number"))
            }
            _ => writeln!(out, "  suspended {} {} until {}: {}", s("subject"), s("id"), s("until"), s("cause")),
        }
        .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_in_an_import_is_named_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.csv");
        std::fs::write(&file, "time,caller,callee\n2026-12-01T10:00:00Z,+12125550100\n").unwrap();
        // Port 9 on loopback: nothing listens, and nothing is asked anyway.
        let cmd = ComplaintCommand::Import {
            file: file.clone(),
            format: ImportFormat::Csv,
            admin: AdminArgs { admin: "127.0.0.1:9".into(), token: None },
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(cmd, &mut out, &mut err).unwrap(), 1);
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with(&format!("{}:2: expected time,caller,callee", file.display())), "{err}");
    }
}
