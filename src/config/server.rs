//! `[server]` and `[upstream]`.
use super::{Diagnostics, Spanned};
use crate::sip::addr::HostPort;
pub use crate::sip::addr::Transport;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A string or a list of strings (`advertise`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub mode: Option<Spanned<String>>,
    pub listen: Option<Vec<Spanned<String>>>,
    pub advertise: Option<Spanned<OneOrMany>>,
    pub max_message_bytes: Option<Spanned<i64>>,
    pub record_route: Option<bool>,
    pub relay_to: Option<Vec<Spanned<String>>>,
    pub secret: Option<Spanned<String>>,
    pub tcp_idle_seconds: Option<Spanned<i64>>,
    pub tcp_max_connections: Option<Spanned<i64>>,
    pub tcp_max_outbound_connections: Option<Spanned<i64>>,
    pub tcp_max_connections_per_source: Option<Spanned<i64>>,
    pub tcp_message_timeout_seconds: Option<Spanned<i64>>,
    pub shutdown_grace_seconds: Option<Spanned<i64>>,
    pub udp_batch_wait_us: Option<Spanned<i64>>,
    pub udp_threads: Option<Spanned<i64>>,
    pub overload_delay_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
pub struct RawUpstream {
    pub uri: Spanned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Where requests without a Route header go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// `[server] mode`: relay calls (the default), or answer each initial INVITE with the
/// verdict (a 302 to the original Request-URI, or the reject response) and forward nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerMode {
    #[default]
    Proxy,
    Redirect,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub mode: ServerMode,
    pub listen: Vec<Listen>,
    /// host:port we put in our Via and Record-Route, per address family (RFC 5118): the
    /// IPv4 one for next hops reached over IPv4, the IPv6 one for IPv6. A family without
    /// listeners has none.
    pub advertise_v4: Option<HostPort>,
    pub advertise_v6: Option<HostPort>,
    pub max_message_bytes: usize,
    pub record_route: bool,
    pub upstream: Option<Upstream>,
    /// Networks requests may be relayed to besides the upstream and the customers'.
    pub relay_to: Vec<IpNet>,
    /// `[server] secret`: key material shared by the nodes of a cluster (else the
    /// `[state]` secret file is used).
    pub secret: Option<String>,
    pub tcp_idle: Duration,
    /// Connections accepted from peers, and connections we open to next hops.
    pub tcp_max_connections: usize,
    pub tcp_max_outbound_connections: usize,
    pub tcp_max_connections_per_source: usize,
    /// Time allowed to receive a whole message once its first byte arrived (slow senders).
    pub tcp_message_timeout: Duration,
    pub shutdown_grace: Duration,
    /// After each UDP receive batch, wait this long so that datagrams gather (0: never).
    pub udp_batch_wait: Duration,
    /// Receive threads (and SO_REUSEPORT sockets) per UDP listener.
    pub udp_threads: usize,
    /// A datagram older than this when read means the core is behind: new calls get 503.
    /// Zero: never shed.
    pub overload_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut d = Diagnostics::new(std::path::Path::new(""), "");
        // The defaults are valid by construction.
        validate(&RawServer::default(), None, &mut d).unwrap_or_else(|| unreachable!())
    }
}

/// 0.5 ms: at 2000 calls/s about a quarter of the CPU per call saved (BENCHMARKS.md), for at
/// most 0.5 ms added to a message that arrives during the wait.
pub const DEFAULT_UDP_BATCH_WAIT_US: i64 = 500;
/// A quarter of a second in the receive queue: far beyond any normal load (a datagram is
/// read within microseconds), well before a UAC's first retransmission (500 ms).
pub const DEFAULT_OVERLOAD_DELAY_MS: i64 = 250;

/// Beyond 10 ms the wait would show in call set-up times.
pub const MAX_UDP_BATCH_WAIT_US: i64 = 10_000;

pub const DEFAULT_LISTEN: [&str; 2] = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"];
/// A shared secret shorter than this is too easy to guess.
pub const MIN_SECRET_CHARS: usize = 32;

/// Parse `udp:IP:PORT` / `tcp:[IPv6]:PORT`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    let (t, rest) = s.split_once(':').ok_or("expected TRANSPORT:IP:PORT, e.g. udp:127.0.0.1:5060")?;
    let transport =
        Transport::from_token(t.as_bytes()).ok_or_else(|| format!("unknown transport `{t}` (udp or tcp)"))?;
    let addr =
        rest.parse::<SocketAddr>().map_err(|_| format!("bad address `{rest}`: expected IP:PORT or [IPv6]:PORT"))?;
    Ok(Listen { transport, addr })
}

/// Parse `sip:HOST:PORT;transport=udp` where HOST is an IP literal.
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let rest =
        s.strip_prefix("sip:").ok_or_else(|| format!("bad URI `{s}`: expected sip:IP:PORT[;transport=udp|tcp]"))?;
    let mut parts = rest.split(';');
    let hostport = parts.next().unwrap_or("");
    let mut transport = Transport::Udp;
    for p in parts {
        match p.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("transport") => {
                transport = Transport::from_token(v.as_bytes())
                    .ok_or_else(|| format!("bad URI `{s}`: unknown transport `{v}`"))?;
            }
            _ => return Err(format!("bad URI `{s}`: unexpected parameter `{p}`")),
        }
    }
    let addr = match hostport.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => match hostport.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 5060),
            Err(_) => {
                return Err(format!(
                    "bad URI `{s}`: the host must be an IP address (a stateless proxy does no DNS per call)"
                ));
            }
        },
    };
    Ok(Upstream { transport, addr })
}

fn positive(d: &mut Diagnostics<'_>, v: &Option<Spanned<i64>>, key: &str, default: i64, max: i64) -> Option<i64> {
    match v {
        None => Some(default),
        Some(s) if (1..=max).contains(s.get_ref()) => Some(*s.get_ref()),
        Some(s) => {
            d.error(s.span(), format!("{key} = {}: must be between 1 and {max}", s.get_ref()));
            None
        }
    }
}

pub fn validate(raw: &RawServer, upstream: Option<&RawUpstream>, d: &mut Diagnostics<'_>) -> Option<ServerConfig> {
    let mut ok = true;
    let mut listen = Vec::new();
    match &raw.listen {
        None => listen.extend(DEFAULT_LISTEN.iter().filter_map(|s| parse_listen(s).ok())),
        Some(items) => {
            for item in items {
                match parse_listen(item.get_ref()) {
                    Ok(l) => listen.push(l),
                    Err(e) => {
                        d.error(item.span(), format!("server.listen `{}`: {e}", item.get_ref()));
                        ok = false;
                    }
                }
            }
            if items.is_empty() {
                d.error(0..0, "server.listen is empty: give at least one udp: or tcp: address");
                ok = false;
            }
        }
    }
    let (advertise_v4, advertise_v6) = advertise(raw, &listen, d).unwrap_or_else(|| {
        ok = false;
        (None, None)
    });
    let before = d.errors.len();
    let relay_to = raw.relay_to.as_deref().unwrap_or_default().iter().filter_map(|s| super::cidr(s, d)).collect();
    ok &= d.errors.len() == before;
    let secret = match &raw.secret {
        Some(s) if s.get_ref().chars().count() < MIN_SECRET_CHARS => {
            d.error(
                s.span(),
                format!("server.secret: at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)"),
            );
            ok = false;
            None
        }
        Some(s) => Some(s.get_ref().clone()),
        None => None,
    };
    let max_message_bytes = positive(d, &raw.max_message_bytes, "server.max_message_bytes", 65535, 1 << 20);
    let idle = positive(d, &raw.tcp_idle_seconds, "server.tcp_idle_seconds", 300, 86400);
    let maxconn = positive(d, &raw.tcp_max_connections, "server.tcp_max_connections", 1024, 1 << 20);
    let maxout = positive(d, &raw.tcp_max_outbound_connections, "server.tcp_max_outbound_connections", 256, 1 << 20);
    let per_source =
        positive(d, &raw.tcp_max_connections_per_source, "server.tcp_max_connections_per_source", 32, 1 << 20);
    let msg_timeout = positive(d, &raw.tcp_message_timeout_seconds, "server.tcp_message_timeout_seconds", 10, 3600);
    let grace = positive(d, &raw.shutdown_grace_seconds, "server.shutdown_grace_seconds", 5, 3600);
    let batch_wait = match &raw.udp_batch_wait_us {
        None => Some(DEFAULT_UDP_BATCH_WAIT_US),
        Some(s) if (0..=MAX_UDP_BATCH_WAIT_US).contains(s.get_ref()) => Some(*s.get_ref()),
        Some(s) => {
            d.error(
                s.span(),
                format!("server.udp_batch_wait_us = {}: must be between 0 and {MAX_UDP_BATCH_WAIT_US}", s.get_ref()),
            );
            None
        }
    };
    // Half the CPUs: the kernel's own packet processing (softirq, the sends) needs the other
    // half; on 2 cores at 2000 calls/s two threads cost 1.21x the floor relay's CPU per call,
    // one thread 1.08x (BENCHMARKS.md).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default_threads = (cpus / 2).clamp(1, 8) as i64;
    let udp_threads = positive(d, &raw.udp_threads, "server.udp_threads", default_threads, 64);
    let overload = match &raw.overload_delay_ms {
        None => Some(DEFAULT_OVERLOAD_DELAY_MS),
        Some(s) if (0..=60_000).contains(s.get_ref()) => Some(*s.get_ref()),
        Some(s) => {
            d.error(s.span(), format!("server.overload_delay_ms = {}: must be between 0 and 60000", s.get_ref()));
            None
        }
    };
    let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("proxy", _)) => ServerMode::Proxy,
        Some(("redirect", _)) => ServerMode::Redirect,
        Some((other, span)) => {
            d.error(span, format!("server.mode = \"{other}\": expected \"proxy\" or \"redirect\""));
            ok = false;
            ServerMode::Proxy
        }
    };
    let upstream = match upstream {
        None => None,
        Some(u) => match parse_upstream(u.uri.get_ref()) {
            Ok(x) => Some(x),
            Err(e) => {
                d.error(u.uri.span(), format!("upstream.uri: {e}"));
                ok = false;
                None
            }
        },
    };
    if !ok {
        return None;
    }
    Some(ServerConfig {
        mode,
        listen,
        advertise_v4,
        advertise_v6,
        max_message_bytes: max_message_bytes? as usize,
        record_route: raw.record_route.unwrap_or(false),
        upstream,
        relay_to,
        secret,
        tcp_idle: Duration::from_secs(idle? as u64),
        tcp_max_connections: maxconn? as usize,
        tcp_max_outbound_connections: maxout? as usize,
        tcp_max_connections_per_source: per_source? as usize,
        tcp_message_timeout: Duration::from_secs(msg_timeout? as u64),
        shutdown_grace: Duration::from_secs(grace? as u64),
        udp_batch_wait: Duration::from_micros(batch_wait? as u64),
        udp_threads: udp_threads? as usize,
        overload_delay: Duration::from_millis(overload? as u64),
    })
}

/// The advertised address of each address family that has listeners: an entry of
/// `advertise` with an IP of that family, else a host name entry, else the listener's own
/// address (refused when it is 0.0.0.0 or [::], which no peer can send to).
fn advertise(
    raw: &RawServer,
    listen: &[Listen],
    d: &mut Diagnostics<'_>,
) -> Option<(Option<HostPort>, Option<HostPort>)> {
    let mut entries = Vec::new();
    let mut ok = true;
    if let Some(a) = &raw.advertise {
        let list: Vec<&String> = match a.get_ref() {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v.iter().collect(),
        };
        if list.is_empty() {
            d.error(a.span(), "server.advertise is empty");
            ok = false;
        }
        for v in list {
            match HostPort::parse(v) {
                Some(hp) if !hp.ip().is_some_and(|ip| ip.is_unspecified()) => entries.push(hp),
                _ => {
                    d.error(
                        a.span(),
                        format!("server.advertise `{v}`: expected HOST:PORT or [IPv6]:PORT that peers can reach"),
                    );
                    ok = false;
                }
            }
        }
    }
    if !ok {
        return None;
    }
    let pick = |v6: bool| -> Result<Option<HostPort>, Listen> {
        let Some(l) = listen.iter().find(|l| l.addr.is_ipv6() == v6) else { return Ok(None) };
        let by_ip = entries.iter().find(|e| e.ip().is_some_and(|ip| ip.is_ipv6() == v6));
        let by_name = entries.iter().find(|e| e.ip().is_none());
        match by_ip.or(by_name) {
            Some(e) => Ok(Some(e.clone())),
            None if raw.advertise.is_none() && !l.addr.ip().is_unspecified() => Ok(Some(HostPort::of(l.addr))),
            None => Err(*l),
        }
    };
    let mut fam = |v6: bool| match pick(v6) {
        Ok(x) => x,
        Err(l) => {
            let span = raw.advertise.as_ref().map(|a| a.span()).or_else(|| {
                raw.listen
                    .as_ref()
                    .and_then(|ls| ls.iter().find(|s| parse_listen(s.get_ref()).ok() == Some(l)).map(|s| s.span()))
            });
            let family = if v6 { "IPv6" } else { "IPv4" };
            let msg = if raw.advertise.is_some() {
                format!(
                    "server.advertise has no {family} address or host name for listener {}:{}",
                    l.transport.label(),
                    l.addr
                )
            } else {
                format!(
                    "server.listen `{}:{}` binds every address: set server.advertise to the {family} address peers reach this proxy at",
                    l.transport.label(),
                    l.addr
                )
            };
            d.error(span.unwrap_or(0..0), msg);
            ok = false;
            None
        }
    };
    let v4 = fam(false);
    let v6 = fam(true);
    ok.then_some((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("udp:[::1]:5060").unwrap().addr, "[::1]:5060".parse().unwrap());
        assert_eq!(parse_listen("TCP:127.0.0.1:5061").unwrap().transport, Transport::Tcp);
        assert!(parse_listen("sctp:127.0.0.1:5060").is_err());
        assert!(parse_listen("udp:localhost:5060").is_err());
    }

    #[test]
    fn upstream_forms() {
        let u = parse_upstream("sip:127.0.0.1:5080;transport=tcp").unwrap();
        assert_eq!((u.transport, u.addr.port()), (Transport::Tcp, 5080));
        assert_eq!(parse_upstream("sip:[::1]").unwrap().addr, "[::1]:5060".parse().unwrap());
        assert!(parse_upstream("http://x").is_err());
        assert!(parse_upstream("sip:carrier.example:5060").is_err());
    }

    #[test]
    fn every_bad_value_is_reported() {
        let text = "[server]\nlisten = [\"udp:1.2.3.4:5060\", \"udp:nope\"]\nadvertise = \"x\"\nmax_message_bytes = 0\n[upstream]\nuri = \"tel:123\"\n";
        let e = Config::parse(Path::new("c.toml"), text).unwrap_err();
        let lines: Vec<usize> = e.0.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 6], "{e}");
    }

    #[test]
    fn defaults() {
        let c = Config::parse(Path::new("c.toml"), "").unwrap();
        assert_eq!(c.server.listen.len(), 2);
        assert_eq!(c.server.advertise_v4.as_ref().map(|a| a.to_string()).as_deref(), Some("127.0.0.1:5060"));
        assert!(c.server.advertise_v6.is_none());
        assert!(c.server.relay_to.is_empty() && c.server.secret.is_none());
        assert_eq!(c.server.max_message_bytes, 65535);
        assert!(c.server.upstream.is_none());
        assert_eq!(c.server.udp_batch_wait, Duration::from_micros(500));
    }

    #[test]
    fn advertise_per_family() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[server]\nlisten = [\"udp:0.0.0.0:5060\", \"udp:[::]:5060\"]\nadvertise = [\"203.0.113.5:5060\", \"[2001:db8::5]:5060\"]\n",
        )
        .unwrap();
        assert_eq!(c.server.advertise_v4.unwrap().to_string(), "203.0.113.5:5060");
        assert_eq!(c.server.advertise_v6.unwrap().to_string(), "[2001:db8::5]:5060");
        let c = Config::parse(Path::new("c.toml"), "[server]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:[::1]:5062\"]\n")
            .unwrap();
        assert_eq!(c.server.advertise_v6.unwrap().to_string(), "[::1]:5062", "derived from the IPv6 listener");
        let c = Config::parse(
            Path::new("c.toml"),
            "[server]\nlisten = [\"udp:0.0.0.0:5060\"]\nadvertise = \"sbc.example:5060\"\n",
        )
        .unwrap();
        assert_eq!(c.server.advertise_v4.unwrap().to_string(), "sbc.example:5060");
        let e = Config::parse(Path::new("c.toml"), "[server]\n\nlisten = [\"udp:0.0.0.0:5060\"]\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, 3, "{e}");
        assert!(e.0[0].msg.contains("binds every address: set server.advertise"), "{e}");
        let e = Config::parse(
            Path::new("c.toml"),
            "[server]\nlisten = [\"udp:[::]:5060\"]\nadvertise = \"203.0.113.5:5060\"\n",
        )
        .unwrap_err();
        assert!(e.0[0].msg.contains("no IPv6 address"), "{e}");
        assert!(Config::parse(Path::new("c.toml"), "[server]\nadvertise = \"0.0.0.0:5060\"\n").is_err());
    }

    #[test]
    fn relay_and_secret() {
        let c = Config::parse(
            Path::new("c.toml"),
            "[server]\nrelay_to = [\"198.51.100.0/24\"]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        assert_eq!(c.server.relay_to, vec!["198.51.100.0/24".parse::<IpNet>().unwrap()]);
        assert!(c.server.secret.is_some());
        let e =
            Config::parse(Path::new("c.toml"), "[server]\nrelay_to = [\"nope\"]\nsecret = \"short\"\n").unwrap_err();
        let lines: Vec<usize> = e.0.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 3], "{e}");
    }

    #[test]
    fn mode_values() {
        assert_eq!(Config::parse(Path::new("c.toml"), "").unwrap().server.mode, ServerMode::Proxy);
        let c = Config::parse(Path::new("c.toml"), "[server]\nmode = \"redirect\"\n").unwrap();
        assert_eq!(c.server.mode, ServerMode::Redirect);
        let e = Config::parse(Path::new("c.toml"), "[server]\n\nmode = \"redirct\"\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, 3, "{e}");
        assert!(e.0[0].msg.contains("expected \"proxy\" or \"redirect\""), "{e}");
    }

    #[test]
    fn udp_batch_wait_range() {
        let c = Config::parse(Path::new("c.toml"), "[server]\nudp_batch_wait_us = 0\n").unwrap();
        assert_eq!(c.server.udp_batch_wait, Duration::ZERO);
        let e = Config::parse(Path::new("c.toml"), "[server]\n\nudp_batch_wait_us = 20000\n").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, 3, "{e}");
        assert!(e.to_string().contains("server.udp_batch_wait_us = 20000: must be between 0 and 10000"), "{e}");
        assert!(Config::parse(Path::new("c.toml"), "[server]\nudp_batch_wait_us = -1\n").is_err());
    }
}
