//! `sipguard suspension list | lift ID`: the suspensions of a running proxy, through its
//! admin listener.
use crate::admin_client::{self, ClientError};
use clap::Subcommand;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum SuspensionCommand {
    /// List the caller IDs and accounts suspended now: id, account, until, source and cause.
    List {
        /// The admin listener of the running proxy (`[admin] listen`), e.g. localhost:9060.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9060")]
        admin: String,
        /// The admin token (`[admin] token`), if one is set.
        #[arg(long)]
        token: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift a suspension early: ID is a caller ID (+12125550100) or an account id.
    Lift {
        /// The caller ID or account to lift.
        id: String,
        /// The admin listener of the running proxy (`[admin] listen`), e.g. localhost:9060.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9060")]
        admin: String,
        /// The admin token (`[admin] token`), if one is set.
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SuspensionCliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Refused(String),
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// Run one command, writing to stdout. Exit code 0, or 1 when there was nothing to lift.
pub fn run(cmd: SuspensionCommand, out: &mut impl std::io::Write) -> Result<u8, SuspensionCliError> {
    match cmd {
        SuspensionCommand::List { admin, token, json } => {
            let r = admin_client::request(&admin, token.as_deref(), "GET", "/suspensions", None, TIMEOUT)?;
            if !r.ok() {
                return Err(SuspensionCliError::Refused(format!("{}: {}", r.status, r.body.trim())));
            }
            if json {
                let _ = writeln!(out, "{}", r.body.trim());
                return Ok(0);
            }
            let v: serde_json::Value = serde_json::from_str(&r.body)
                .map_err(|e| SuspensionCliError::Refused(format!("unreadable answer: {e}")))?;
            let rows = v["suspensions"].as_array().cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<16} {:<10} {:<14} {:<21} {:<11} CAUSE",
                "ID", "SUBJECT", "ACCOUNT", "UNTIL", "SOURCE"
            );
            for s in &rows {
                let f = |k: &str| s[k].as_str().unwrap_or("").to_string();
                let _ = writeln!(
                    out,
                    "{:<16} {:<10} {:<14} {:<21} {:<11} {}",
                    f("id"),
                    f("subject"),
                    f("account"),
                    f("until"),
                    f("source"),
                    f("cause")
                );
            }
            let _ = writeln!(out, "{} suspended", rows.len());
            Ok(0)
        }
        SuspensionCommand::Lift { id, admin, token } => {
            let path = format!("/suspensions/{}/lift", percent(&id));
            let r = admin_client::request(&admin, token.as_deref(), "POST", &path, None, TIMEOUT)?;
            match r.status {
                200 => {
                    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                    let n = v["lifted"].as_array().map_or(0, Vec::len);
                    let _ = writeln!(out, "lifted {n} suspension(s) of {id}");
                    Ok(0)
                }
                404 => {
                    let _ = writeln!(out, "no suspension of {id} in force");
                    Ok(1)
                }
                s => Err(SuspensionCliError::Refused(format!("{s}: {}", r.body.trim()))),
            }
        }
    }
}

/// Escape a path segment: everything but unreserved characters and `+`.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_escaped_for_the_path() {
        assert_eq!(super::percent("+12125550100"), "+12125550100");
        assert_eq!(super::percent("a/b c"), "a%2Fb%20c");
    }
}
