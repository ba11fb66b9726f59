//! `[log]` and `[admin]`: how sipguard is run and watched.
use super::{Diagnostics, Spanned};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    pub level: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub decisions: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the decision log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionSink {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub decisions: Option<DecisionSink>,
}

pub fn validate_log(raw: &RawLog, d: &mut Diagnostics<'_>) -> Option<LogConfig> {
    let mut ok = true;
    let level = match &raw.level {
        None => "info".to_string(),
        Some(l) => {
            let v = l.get_ref().to_ascii_lowercase();
            if !["error", "warn", "info", "debug", "trace"].contains(&v.as_str()) {
                d.error(
                    l.span(),
                    format!(
                        "log.level `{}`: expected error, warn, info, debug or trace",
                        l.get_ref()
                    ),
                );
                ok = false;
            }
            v
        }
    };
    let format = match raw
        .format
        .as_ref()
        .map(|f| (f.get_ref().as_str(), f.span()))
    {
        None | Some(("text", _)) => LogFormat::Text,
        Some(("json", _)) => LogFormat::Json,
        Some((other, span)) => {
            d.error(
                span,
                format!("log.format `{other}`: expected \"text\" or \"json\""),
            );
            ok = false;
            LogFormat::Text
        }
    };
    let decisions = raw.decisions.as_ref().map(|p| match p.get_ref().as_str() {
        "-" => DecisionSink::Stdout,
        path => DecisionSink::File(d.resolve(path)),
    });
    ok.then_some(LogConfig {
        level,
        format,
        decisions,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

pub fn validate_admin(raw: &RawAdmin, d: &mut Diagnostics<'_>) -> Option<AdminConfig> {
    let Some(l) = &raw.listen else {
        d.error(0..0, "[admin] needs `listen = \"127.0.0.1:9060\"`");
        return None;
    };
    match l.get_ref().parse::<SocketAddr>() {
        Ok(listen) => Some(AdminConfig {
            listen,
            token: raw.token.clone(),
        }),
        Err(_) => {
            d.error(
                l.span(),
                format!("admin.listen `{}`: expected IP:PORT", l.get_ref()),
            );
            None
        }
    }
}
