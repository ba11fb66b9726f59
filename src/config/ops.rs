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
                d.error(l.span(), format!("log.level `{}`: expected error, warn, info, debug or trace", l.get_ref()));
                ok = false;
            }
            v
        }
    };
    let format = match raw.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("text", _)) => LogFormat::Text,
        Some(("json", _)) => LogFormat::Json,
        Some((other, span)) => {
            d.error(span, format!("log.format `{other}`: expected \"text\" or \"json\""));
            ok = false;
            LogFormat::Text
        }
    };
    let decisions = raw.decisions.as_ref().map(|p| match p.get_ref().as_str() {
        "-" => DecisionSink::Stdout,
        path => DecisionSink::File(d.resolve(path)),
    });
    ok.then_some(LogConfig { level, format, decisions })
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

/// The admin API can reload the proxy and shows account usage: on an address other hosts
/// can reach it must have a token.
pub fn validate_admin(raw: &RawAdmin, d: &mut Diagnostics<'_>) -> Option<AdminConfig> {
    let Some(l) = &raw.listen else {
        d.error(0..0, "[admin] needs `listen = \"127.0.0.1:9060\"`");
        return None;
    };
    let Ok(listen) = l.get_ref().parse::<SocketAddr>() else {
        d.error(l.span(), format!("admin.listen `{}`: expected IP:PORT", l.get_ref()));
        return None;
    };
    let token = match &raw.token {
        Some(t) if t.get_ref().trim().is_empty() => {
            d.error(t.span(), "admin.token is empty");
            return None;
        }
        Some(t) => Some(t.get_ref().clone()),
        None => None,
    };
    if token.is_none() && !listen.ip().is_loopback() {
        d.error(
            l.span(),
            format!("admin.listen `{listen}` is not a loopback address: set admin.token too, or listen on 127.0.0.1"),
        );
        return None;
    }
    Some(AdminConfig { listen, token })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn admin(text: &str) -> Result<Option<super::AdminConfig>, String> {
        Config::parse(Path::new("t.toml"), text).map(|c| c.admin).map_err(|e| e.to_string())
    }

    #[test]
    fn non_loopback_admin_needs_a_token() {
        let e = admin("[admin]\nlisten = \"0.0.0.0:9060\"\n").unwrap_err();
        assert!(e.contains("t.toml:2: admin.listen `0.0.0.0:9060` is not a loopback"), "{e}");
        let a = admin("[admin]\nlisten = \"0.0.0.0:9060\"\ntoken = \"s3cret\"\n").unwrap();
        assert_eq!(a.and_then(|a| a.token).as_deref(), Some("s3cret"));
        assert!(admin("[admin]\nlisten = \"[::1]:9060\"\n").is_ok());
    }

    #[test]
    fn empty_token_is_refused() {
        let e = admin("[admin]\nlisten = \"127.0.0.1:9060\"\ntoken = \" \"\n").unwrap_err();
        assert!(e.contains("t.toml:3: admin.token is empty"), "{e}");
    }
}
