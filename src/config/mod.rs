//! Configuration: serde types per section, validated into runtime types. Every problem is
//! reported as `FILE:LINE: what is wrong`, all of them at once where possible.
//!
//! Each section lives in its own file and exposes `Raw*` (what serde reads, with spans) and a
//! `validate` that turns it into the runtime type while pushing diagnostics.

pub mod behaviour;
pub mod cluster;
pub mod complaints;
pub mod dnc;
pub mod files;
pub mod ops;
pub mod screening;
pub mod security;
pub mod server;
pub mod state;
pub mod stir;
mod suggest;

use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use toml::Spanned;

/// One problem in a configuration file (or a file it names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub file: PathBuf,
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.msg)
    }
}

/// Every problem found; `Display` prints one per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Diag>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics against one source text.
pub struct Diagnostics<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    pub errors: Vec<Diag>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Diagnostics { file, text, base_dir, errors: Vec::new() }
    }

    /// 1-based line of a byte offset in the config text.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// An error at a span of the config text.
    pub fn error(&mut self, span: Range<usize>, msg: impl Into<String>) {
        let line = self.line_of(span.start);
        self.errors.push(Diag { file: self.file.to_path_buf(), line, msg: msg.into() });
    }

    /// An error in another file (a CSV or list the config names), at its own line.
    pub fn error_in(&mut self, file: &Path, line: usize, msg: impl Into<String>) {
        self.errors.push(Diag { file: file.to_path_buf(), line, msg: msg.into() });
    }

    /// An integer key within `min..=max` (`key` is its full name, as `stir.max_pending`);
    /// `default` when absent, and also (after an error naming the range) when out of it.
    pub fn int(&mut self, v: &Option<Spanned<i64>>, key: &str, default: i64, min: i64, max: i64) -> i64 {
        match v {
            None => default,
            Some(s) if (min..=max).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.error(s.span(), format!("{key} = {}: must be between {min} and {max}", s.get_ref()));
                default
            }
        }
    }

    /// Resolve a path from the config relative to the config file's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }
}

/// The configuration file the CLI reads when none is given (`-c`/`--config`).
pub const DEFAULT_PATH: &str = "/etc/sipguard/sipguard.toml";

/// Said by check-config and at start-up when nothing limits where requests go.
pub const OPEN_RELAY_WARNING: &str = "open relay: neither [upstream] nor server.relay_to is set, so a Route header or Request-URI can send requests anywhere; set one of them";

/// The file as serde reads it. Unknown keys are collected (not fatal at parse time) so that
/// all of them are reported with their lines.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: server::RawServer,
    pub upstream: Option<server::RawUpstream>,
    pub screening: Option<screening::RawScreening>,
    #[serde(default)]
    pub responses: screening::RawResponses,
    #[serde(default, rename = "account")]
    pub accounts: Vec<screening::RawAccount>,
    pub dnc: Option<dnc::RawDnc>,
    #[serde(default)]
    pub log: ops::RawLog,
    pub admin: Option<ops::RawAdmin>,
    #[serde(default)]
    pub state: state::RawState,
    pub security: Option<security::RawSecurity>,
    pub stir: Option<stir::RawStir>,
    pub cluster: Option<cluster::RawCluster>,
    pub complaints: Option<complaints::RawComplaints>,
}

/// The validated configuration the running proxy uses; swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub server: server::ServerConfig,
    pub screening: Option<screening::ScreeningConfig>,
    pub dnc: Option<dnc::DncConfig>,
    pub log: ops::LogConfig,
    pub admin: Option<ops::AdminConfig>,
    pub state: state::StateConfig,
    pub security: Option<security::SecurityConfig>,
    /// The `[stir]` files, read again on SIGHUP.
    pub stir_files: stir::StirFiles,
    /// `[cluster]`: None for the local backend. Fixed at start (a change needs a restart).
    pub cluster: cluster::ClusterConfig,
    /// `[complaints]`: None when the section is absent (complaints are not taken).
    pub complaints: Option<complaints::ComplaintsConfig>,
}

impl Config {
    /// Read and validate a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigErrors(vec![Diag { file: file.to_path_buf(), line: 0, msg: format!("cannot read: {e}") }])
        })?;
        Self::parse(file, &text)
    }

    /// Validate config text as if it were read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let mut d = Diagnostics::new(file, text);
        let mut unknown: Vec<String> = Vec::new();
        let de = toml::Deserializer::parse(text);
        let raw: RawConfig =
            match de.and_then(|de| serde_ignored::deserialize(de, |path| unknown.push(path_key(&path)))) {
                Ok(r) => r,
                Err(e) => {
                    let span = e.span().unwrap_or(0..0);
                    d.error(span, e.message().trim().to_string());
                    return Err(ConfigErrors(d.errors));
                }
            };
        report_unknown(&mut d, &unknown);
        let server = server::validate(&raw.server, raw.upstream.as_ref(), &mut d);
        let screening = raw.screening.as_ref().map(|s| screening::validate(s, &raw.accounts, &raw.responses, &mut d));
        if raw.screening.is_none() && !raw.accounts.is_empty() {
            d.errors.push(Diag {
                file: file.to_path_buf(),
                line: text.find("[[account]]").map(|o| d.line_of(o)).unwrap_or(0),
                msg: "[[account]] blocks need a [screening] section to take effect".into(),
            });
        }
        if let (Some(sc), Some(srv)) = (&raw.screening, &server)
            && !srv.record_route
        {
            if let Some(b) = &sc.behaviour {
                behaviour::require_bye(b, "screening.behaviour", &mut d);
            }
            for a in &raw.accounts {
                if let Some(b) = &a.behaviour {
                    behaviour::require_bye(b, &format!("account `{}` behaviour", a.id.get_ref()), &mut d);
                }
            }
        }
        let dnc = raw.dnc.as_ref().map(|x| dnc::validate(x, &mut d));
        if let Some(Some(dc)) = &dnc {
            cross_check_dnc(dc, screening.as_ref().and_then(Option::as_ref), &mut d);
        }
        // With lists configured, a response none of them names is a typo of one that does.
        if raw.screening.is_some()
            && let Some(Some(dc)) = &dnc
        {
            let used: Vec<&str> = dc.lists.iter().map(|l| &*l.response).collect();
            unused_responses(&raw.responses, &used, &mut d);
        }
        let log = ops::validate_log(&raw.log, &mut d);
        let admin = raw.admin.as_ref().map(|a| ops::validate_admin(a, &mut d));
        let state = state::validate(&raw.state, &mut d);
        let security = raw.security.as_ref().map(|s| security::validate(s, &mut d));
        let stir = raw.stir.as_ref().and_then(|s| stir::validate(s, &mut d));
        let cluster = raw.cluster.as_ref().map_or(Some(None), |c| cluster::validate(c, &mut d));
        let complaints = raw.complaints.as_ref().map(|c| complaints::validate(c, &mut d));
        if raw.screening.is_none() && complaints.is_some() {
            let at = text.find("[complaints]").unwrap_or(0);
            d.error(at..at, "[complaints] needs a [screening] section: complaints are attributed to its accounts");
        }
        if complaints.is_none() && raw.responses.0.contains_key(crate::screen::complaints::lists::LIST_NAME) {
            let at = text.find("responses.complaints").map_or(0..0, |o| o..o);
            d.error(
                at,
                "[responses.complaints] answers callees on complaints lists, which need a [complaints] section",
            );
        }
        let stir_on = raw.stir.as_ref().and_then(|s| s.mode.as_ref()).is_some_and(|m| m.get_ref() != "off");
        if raw.screening.is_none() && stir_on {
            let at = text.find("[stir]").unwrap_or(0);
            d.error(at..at, "[stir] needs a [screening] section: verification is a screening step");
        }
        if !d.errors.is_empty() {
            d.errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            return Err(ConfigErrors(d.errors));
        }
        // Every validator returns Some when it pushed no error.
        let parts = (server, screening.transpose_all(), dnc.transpose_all(), log, admin.transpose_all(), state);
        match (parts, security.transpose_all()) {
            ((Some(server), Some(mut screening), Some(dnc), Some(log), Some(admin), Some(state)), Some(security)) => {
                let (stir, stir_files) = stir.map_or((None, Default::default()), |(c, f)| (Some(c), f));
                let cluster = cluster.flatten();
                if let Some(sc) = screening.as_mut() {
                    sc.stir = stir;
                    sc.cluster = cluster.as_ref().map(cluster::RedisConfig::shared);
                }
                Ok(Config {
                    file: file.to_path_buf(),
                    server,
                    screening,
                    dnc,
                    log,
                    admin,
                    state,
                    security,
                    stir_files,
                    cluster,
                    complaints,
                })
            }
            _ => {
                Err(ConfigErrors(vec![Diag { file: file.to_path_buf(), line: 0, msg: "invalid configuration".into() }]))
            }
        }
    }
}

impl Config {
    /// What is valid but probably not meant: said by check-config and at start-up.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut w = Vec::new();
        // A redirect server forwards nothing: neither warning applies to it.
        let proxy = self.server.mode == server::ServerMode::Proxy;
        if proxy && self.server.upstream.is_none() && self.server.relay_to.is_empty() {
            w.push(OPEN_RELAY_WARNING);
        }
        if proxy && self.screening.is_some() && !self.server.record_route {
            w.push(NO_RECORD_ROUTE_WARNING);
        }
        if self
            .cluster
            .as_ref()
            .is_some_and(|c| c.on_failure == crate::screen::quota::shared::OnFailure::Local && c.nodes == 1)
        {
            w.push(LOCAL_ONE_NODE_WARNING);
        }
        w
    }
}

/// `on_failure = "local"` divides the caps by `nodes`: left at 1, each node takes it all.
pub const LOCAL_ONE_NODE_WARNING: &str = "cluster.on_failure = \"local\" with nodes = 1: during an outage every node may admit the whole remaining cap; set nodes to the number of sipguard nodes";

/// Without our Record-Route no in-dialog INVITE can prove its dialog was screened here.
pub const NO_RECORD_ROUTE_WARNING: &str = "server.record_route is off: every re-INVITE is screened (and counted) like a new call, since none can prove its dialog was screened here; set record_route = true";

/// DNC lists answer with a `[responses.<name>]` entry and may be limited to accounts: with
/// `[screening]` on, both must exist. (Without it the lists serve `sipguard dnc check` only.)
fn cross_check_dnc(dc: &dnc::DncConfig, sc: Option<&screening::ScreeningConfig>, d: &mut Diagnostics<'_>) {
    let at = |d: &Diagnostics<'_>, needle: &str| d.text.find(needle).map_or(0..0, |o| o..o);
    let Some(sc) = sc else { return };
    for list in &dc.lists {
        let name = list.response.as_ref();
        if name != "dnc" && !sc.responses.extra_names().any(|n| n == name) {
            let span = at(d, &format!("\"{name}\""));
            d.error(span, format!("dnc.list `{}`: response `{name}` has no [responses.{name}] section", list.name));
        }
        for acct in list.accounts.iter().flatten() {
            if !sc.accounts.iter().any(|a| &*a.id == acct.as_str()) {
                let span = at(d, &format!("\"{acct}\""));
                d.error(span, format!("dnc.list `{}`: unknown account `{acct}`", list.name));
            }
        }
    }
}

/// A `[responses.dnc_<name>]` section no list answers with is a typo (`dnc_natonal`): its
/// list would answer with the default, silently.
fn unused_responses(raw: &screening::RawResponses, used: &[&str], d: &mut Diagnostics<'_>) {
    for name in raw.0.keys().filter(|n| n.starts_with("dnc_") && !used.contains(&n.as_str())) {
        let at = d.text.find(&format!("responses.{name}")).map_or(0..0, |o| o..o);
        let hint = used
            .iter()
            .filter(|u| u.starts_with("dnc_"))
            .map(|u| (suggest::distance(name, u), *u))
            .filter(|&(n, _)| n <= (name.len() / 3).max(1))
            .min()
            .map_or(String::new(), |(_, u)| format!("; did you mean `{u}`?"));
        d.error(at, format!("[responses.{name}]: no [[dnc.list]] has response = \"{name}\"{hint}"));
    }
}

/// A network in CIDR form (or a bare address, as a /32 or /128), reported at its line.
pub(crate) fn cidr(s: &Spanned<String>, d: &mut Diagnostics<'_>) -> Option<ipnet::IpNet> {
    let text = s.get_ref().trim();
    let net =
        text.parse::<ipnet::IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from));
    if net.is_none() {
        d.error(s.span(), format!("bad CIDR `{text}`: expected e.g. 192.0.2.0/24 or 2001:db8::/32"));
    }
    // Normalise 192.0.2.7/24 to 192.0.2.0/24 so duplicates are found.
    net.map(|n| n.trunc())
}

/// `Option<Option<T>>` from an optional section whose validation may fail: outer None means
/// validation failed, `Some(None)` means the section is absent.
trait TransposeAll<T> {
    fn transpose_all(self) -> Option<Option<T>>;
}

impl<T> TransposeAll<T> for Option<Option<T>> {
    fn transpose_all(self) -> Option<Option<T>> {
        match self {
            None => Some(None),
            Some(None) => None,
            Some(Some(v)) => Some(Some(v)),
        }
    }
}

/// The key path serde_ignored reports as the dotted path of the file (`account.0.quota.x`):
/// its Option and newtype steps (printed `?`) and toml's span wrappers are not in the file.
fn path_key(path: &serde_ignored::Path<'_>) -> String {
    fn walk(p: &serde_ignored::Path<'_>, out: &mut Vec<String>) {
        use serde_ignored::Path as P;
        match p {
            P::Root => {}
            P::Seq { parent, index } => {
                walk(parent, out);
                out.push(index.to_string());
            }
            P::Map { parent, key } => {
                walk(parent, out);
                if !key.starts_with("$__") {
                    out.push(key.clone());
                }
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut parts = Vec::new();
    walk(path, &mut parts);
    parts.join(".")
}

/// Report each unknown key at the line where it appears, with the nearest valid key.
fn report_unknown(d: &mut Diagnostics<'_>, unknown: &[String]) {
    let doc = toml::de::DeTable::parse(d.text).ok();
    for key in unknown {
        let span = doc.as_ref().and_then(|t| locate(t.get_ref(), key)).unwrap_or(0..0);
        let (parent, last) = key.rsplit_once('.').unwrap_or(("", key));
        let hint = suggest::nearest(&section_of(parent), last).map(|k| format!("; did you mean `{k}`?"));
        d.error(span, format!("unknown key `{key}`{}", hint.unwrap_or_default()));
    }
}

/// The section a key path is in, as config.example.toml writes it: array indexes dropped,
/// every `[responses.<rule>]` one section.
fn section_of(parent: &str) -> String {
    let parts: Vec<&str> = parent.split('.').filter(|p| !p.is_empty() && p.parse::<usize>().is_err()).collect();
    match parts.as_slice() {
        ["responses", _, ..] => "responses.*".to_string(),
        _ => parts.join("."),
    }
}

/// Span of the last key of a dotted path (`server.foo`, `account.0.bar`) in a parsed document.
fn locate(table: &toml::de::DeTable<'_>, path: &str) -> Option<Range<usize>> {
    let mut parts = path.split('.').peekable();
    let mut cur = table;
    while let Some(part) = parts.next() {
        let (k, v) = cur.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
        if parts.peek().is_none() {
            return Some(k.span());
        }
        let mut value = v.get_ref();
        if let toml::de::DeValue::Array(arr) = value {
            let idx: usize = parts.next()?.parse().ok()?;
            value = arr.get(idx)?.get_ref();
            if parts.peek().is_none() {
                return Some(arr.get(idx)?.span());
            }
        }
        match value {
            toml::de::DeValue::Table(t) => cur = t,
            _ => return Some(k.span()),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match Config::parse(Path::new("t.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn unknown_keys_are_reported_with_their_lines() {
        let e = errs("[server]\nlisten = [\"udp:127.0.0.1:5060\"]\nbogus = 1\n\n[other]\nx = 2\n");
        assert!(e.contains(&"t.toml:3: unknown key `server.bogus`".to_string()), "{e:?}");
        assert!(e.contains(&"t.toml:5: unknown key `other`".to_string()), "{e:?}");
    }

    #[test]
    fn dnc_lists_must_name_existing_responses_and_accounts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("l.txt"), "+12125550100\n").unwrap();
        let file = dir.path().join("c.toml");
        let list = "[[dnc.list]]\nname = \"x\"\npath = \"l.txt\"\nresponse = \"dnc_x\"\naccounts = [\"ghost\"]\n";
        let text = format!("[screening]\nunknown_account = \"forward\"\n{list}");
        let e: Vec<String> = Config::parse(&file, &text).unwrap_err().0.iter().map(|d| d.msg.clone()).collect();
        assert_eq!(
            e,
            [
                "dnc.list `x`: response `dnc_x` has no [responses.dnc_x] section",
                "dnc.list `x`: unknown account `ghost`"
            ]
        );
        assert!(Config::parse(&file, list).is_ok(), "lists alone serve `sipguard dnc check`");
        let ok =
            format!("{text}[responses.dnc_x]\ncode = 607\n[[account]]\nid = \"ghost\"\nsources = [\"10.0.0.0/8\"]\n");
        assert!(Config::parse(&file, &ok).is_ok(), "{:?}", Config::parse(&file, &ok).err());
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = errs("[server]\nlisten = [\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("t.toml:"), "{e:?}");
    }
}
