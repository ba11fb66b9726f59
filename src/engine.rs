//! The screening engine as a library: the policy the proxy applies, for another Rust SIP
//! server (or the HTTP decision API) to call in-process.
//!
//! ```no_run
//! use sipguard::engine::{CallFacts, Engine};
//! use std::time::SystemTime;
//!
//! let engine = Engine::from_config_file("sipguard.toml".as_ref())?;
//! let facts = CallFacts {
//!     source_ip: "192.0.2.10".parse()?,
//!     caller: "+12125550100".into(),
//!     callee: "+13125550199".into(),
//!     call_id: "a84b4c76e66710@pbx".into(),
//!     ..CallFacts::default()
//! };
//! // Commit: a call that passes is counted against its account's quotas at once.
//! let decision = engine.screen(&facts, SystemTime::now());
//! match decision.reject() {
//!     Some((code, reason)) => println!("refuse with {code} {reason}"),
//!     None => println!("place the call (account {:?})", decision.account),
//! }
//! // The call could not be placed after all: give its charge back.
//! engine.release(&decision);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Sans-IO like the rest of the core: the caller passes `now`, nothing here reads a clock,
//! opens a socket or records a metric. The engine never waits: a STIR certificate that is
//! not cached counts as unavailable, and with `[cluster] backend = "redis"` the counts are
//! this process's own (the `on_failure` policy applies), since only the proxy's shell talks
//! to Redis.

use crate::config::{Config, ConfigErrors};
use crate::screen::dnc::{Dnc, DncError, watch};
use crate::screen::policy::Screener;
use crate::screen::{Call, Decision, PassThrough, Screen, Verdict};
use arc_swap::ArcSwap;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("do-not-call lists: {0}")]
    Dnc(#[from] DncError),
}

/// The facts of one call, as a switch knows them. Numbers may be given bare (`+12125550100`,
/// read as a `tel:` URI) or as a URI or header value (`<sip:+12125550100@pbx>;tag=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFacts {
    /// The account, when the caller knows it; else it is found from `source_ip` (an
    /// account's `sources`).
    pub account: Option<String>,
    /// Where the call came from (the customer's address).
    pub source_ip: IpAddr,
    /// The caller ID (the From).
    pub caller: String,
    /// The number called (the Request-URI).
    pub callee: String,
    pub p_asserted_identity: Option<String>,
    /// The Identity header value(s), for STIR/SHAKEN.
    pub identity: Option<String>,
    pub call_id: String,
}

impl Default for CallFacts {
    fn default() -> Self {
        CallFacts {
            account: None,
            source_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            caller: String::new(),
            callee: String::new(),
            p_asserted_identity: None,
            identity: None,
            call_id: String::new(),
        }
    }
}

/// `+1212...` as `<tel:+1212...>`; anything with a scheme or brackets as it is.
fn as_header(n: &str) -> Cow<'_, str> {
    if n.contains(':') || n.contains('<') { Cow::Borrowed(n) } else { Cow::Owned(format!("<tel:{}>", n.trim())) }
}

fn as_uri(n: &str) -> Cow<'_, str> {
    let n = n.trim();
    match n.strip_prefix('<').and_then(|r| r.split('>').next()) {
        Some(inner) => Cow::Borrowed(inner),
        None if n.contains(':') => Cow::Borrowed(n),
        None => Cow::Owned(format!("tel:{n}")),
    }
}

impl CallFacts {
    /// The screening input these facts make (borrowed).
    pub fn call(&self) -> Call<'_> {
        let ruri = as_uri(&self.callee);
        let to = match &ruri {
            Cow::Borrowed(u) => Cow::Owned(format!("<{u}>")),
            Cow::Owned(u) => Cow::Owned(format!("<{u}>")),
        };
        Call {
            source: Some(self.source_ip),
            account_header: None,
            request_uri: ruri,
            from: as_header(&self.caller),
            to,
            p_asserted_identity: self.p_asserted_identity.as_deref().map(as_header),
            identity: self.identity.as_deref().map(Cow::Borrowed),
            call_id: Cow::Borrowed(&self.call_id),
            key: None,
            asserted_account: self.account.as_deref().map(Cow::Borrowed),
        }
    }
}

impl Decision {
    /// The SIP response to refuse the call with, when it is refused.
    pub fn reject(&self) -> Option<(u16, &str)> {
        match &*self.verdict {
            Verdict::Reject { code, reason, .. } => Some((*code, reason.as_str())),
            Verdict::Forward { .. } => None,
        }
    }
}

/// The screening engine: accounts, quotas, caller ID checks, STIR, calling hours and DNC
/// lists, with counters kept in the engine. Cheap to share (`Arc` inside); `screen` takes
/// `&self` from any number of threads.
#[derive(Clone)]
pub struct Engine {
    screen: Arc<dyn Screen>,
}

impl Engine {
    /// From a parsed configuration: its `[screening]` (no section: every call passes) and
    /// the `[dnc]` lists it names, loaded now (not watched: call [`Engine::from_config`]
    /// again to pick up new files; counters start empty).
    pub fn from_config(cfg: &Config) -> Result<Engine, EngineError> {
        let Some(sc) = &cfg.screening else {
            return Ok(Engine { screen: Arc::new(PassThrough) });
        };
        let dnc = Arc::new(ArcSwap::from_pointee(Dnc::default()));
        if let Some(dc) = &cfg.dnc {
            watch::reload(dc, &dnc)?;
        }
        Ok(Engine { screen: Arc::new(Screener::new(sc.clone(), dnc)) })
    }

    /// From a config file (`sipguard check-config` accepts the same files).
    pub fn from_config_file(path: &Path) -> Result<Engine, EngineError> {
        Engine::from_config(&Config::load(path)?)
    }

    /// Around a screen that exists (the running proxy's, so that the API and the proxy
    /// share counters).
    pub fn from_screen(screen: Arc<dyn Screen>) -> Engine {
        Engine { screen }
    }

    /// Screen one call and commit it: a call that passes is counted against its quotas.
    pub fn screen(&self, facts: &CallFacts, now: SystemTime) -> Decision {
        self.screen.screen(&facts.call(), now)
    }

    /// Screen one call without charging it: the same decision `screen` would give now,
    /// with every counter left as it was. (Pacing, `per_second`/`per_minute`, takes its
    /// cell all the same: a rate limiter cannot give one back.)
    pub fn dry_run(&self, facts: &CallFacts, now: SystemTime) -> Decision {
        let mut d = self.screen.screen(&facts.call(), now);
        self.release(&d);
        d.charge = None;
        d
    }

    /// Give back the charge of a committed call that was not placed after all.
    pub fn release(&self, decision: &Decision) {
        // A charge held in a cluster store is the shell's to release; the engine has none.
        let _ = self.screen.release(decision);
    }

    /// The screen inside, for the proxy.
    pub fn inner(&self) -> &Arc<dyn Screen> {
        &self.screen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[screening]
caller_id_numbers = "owned.csv"
[screening.quota]
per_day = 2
[[account]]
id = "acme"
sources = ["192.0.2.0/24"]
[[dnc.list]]
name = "national"
path = "dnc.txt"
"#;

    fn engine() -> Engine {
        let dir = std::env::temp_dir().join(format!("sipguard-engine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("owned.csv"), "account,number\nacme,+12125550100\n").unwrap();
        std::fs::write(dir.join("dnc.txt"), "+13125550111\n").unwrap();
        let path = dir.join("sipguard.toml");
        std::fs::write(&path, CONFIG).unwrap();
        Engine::from_config_file(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn facts(account: Option<&str>, callee: &str) -> CallFacts {
        CallFacts {
            account: account.map(str::to_string),
            source_ip: "192.0.2.7".parse().unwrap(),
            caller: "+12125550100".into(),
            callee: callee.into(),
            call_id: "c1".into(),
            ..CallFacts::default()
        }
    }

    #[test]
    fn commit_dry_run_and_release() {
        let e = engine();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let f = facts(None, "+13125550199");
        // Dry runs charge nothing, however many.
        for _ in 0..5 {
            let d = e.dry_run(&f, now);
            assert_eq!((d.reject(), d.account.as_deref(), d.charge.is_none()), (None, Some("acme"), true));
        }
        let first = e.screen(&f, now);
        assert!(first.reject().is_none() && first.charge.is_some());
        assert!(e.screen(&f, now).reject().is_none());
        assert_eq!(e.screen(&f, now).reject(), Some((403, "Forbidden")), "per_day = 2");
        assert_eq!(e.dry_run(&f, now).reject(), Some((403, "Forbidden")));
        e.release(&first);
        assert!(e.screen(&f, now).reject().is_none(), "a released call frees its place");
        // DNC, an asserted account, a URI form, an unknown account.
        let d = e.dry_run(&facts(Some("acme"), "<sip:+13125550111@carrier;user=phone>"), now);
        assert_eq!((d.reject().map(|r| r.0), d.list.as_deref()), (Some(608), Some("national")));
        let d = e.dry_run(&CallFacts { source_ip: "203.0.113.1".parse().unwrap(), ..f.clone() }, now);
        assert_eq!((d.rule, d.account.as_deref()), (Some(crate::screen::Rule::UnknownAccount), None));
    }

    #[test]
    fn numbers_bare_or_as_uris() {
        let f = facts(None, "+13125550199");
        let c = f.call();
        assert_eq!((c.request_uri.as_ref(), c.from.as_ref()), ("tel:+13125550199", "<tel:+12125550100>"));
        let f = CallFacts { callee: "<sip:+1312@h;user=phone>".into(), caller: "\"A\" <sip:+1@h>;tag=x".into(), ..f };
        let c = f.call();
        assert_eq!((c.request_uri.as_ref(), c.from.as_ref()), ("sip:+1312@h;user=phone", "\"A\" <sip:+1@h>;tag=x"));
    }
}
