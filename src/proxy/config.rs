//! What the core needs from the configuration: our addresses, the next hop, the relay and
//! trust boundaries, and the key. Built once per (re)load.

use crate::config::Config;
use crate::config::server::{ServerConfig, ServerMode, Upstream};
use crate::sip::addr::HostPort;
use crate::sip::branch::Key;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// One advertised address, with our Via text built once so that forwarding formats only
/// the branch.
#[derive(Debug, Clone)]
pub struct Advert {
    pub hp: HostPort,
    /// The host as an address, when it is an IP literal (compared without parsing it again).
    pub ip: Option<IpAddr>,
    /// `host:port`.
    pub text: String,
    /// ` host:port;branch=` (after `Via: SIP/2.0/UDP`).
    pub via_tail: Vec<u8>,
}

impl Advert {
    pub fn new(hp: HostPort) -> Advert {
        let text = hp.to_string();
        let via_tail = format!(" {text};branch=").into_bytes();
        Advert { ip: hp.ip(), hp, text, via_tail }
    }

    /// Does `host[:port]` (default port 5060) name this address?
    pub fn matches(&self, host: &[u8], port: Option<u16>) -> bool {
        if port.unwrap_or(5060) != self.hp.port {
            return false;
        }
        match self.ip {
            // An IP literal host needs parsing only when the text differs (`[::1]` vs
            // `[0:0::1]`); the common case is the very text we wrote.
            Some(ip) => host == self.hp.host.as_bytes() || crate::sip::addr::host_ip(host) == Some(ip),
            None => self.hp.matches(host, port),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Proxy (forward) or redirect (answer every initial INVITE, forward nothing).
    pub mode: ServerMode,
    /// Our address towards IPv4 and IPv6 peers (RFC 5118); at least one is set.
    pub advertise_v4: Option<Advert>,
    pub advertise_v6: Option<Advert>,
    /// Addresses we listen on: a Route or Request-URI naming one of them is us.
    pub local: Vec<SocketAddr>,
    pub record_route: bool,
    pub upstream: Option<Upstream>,
    pub max_message_bytes: usize,
    /// Keys our branches, dialog proofs, reply tags and verdict-cache keys.
    pub key: Key,
    /// Where requests may be forwarded: None is an open relay (no `[upstream]` and no
    /// `relay_to`); else the upstream, `relay_to`, and the customers' networks.
    pub relay_allowed: Option<Vec<IpNet>>,
    /// The far side (the upstream and `relay_to`): in-dialog requests from there follow
    /// their Request-URI back to the customer instead of going to the upstream.
    pub far_side: Vec<IpNet>,
    /// Sources whose P-Asserted-Identity is kept (`trusted_sources` and the upstream);
    /// from anyone else it is removed (RFC 3325 §5).
    pub trusted: Vec<IpNet>,
    /// The customers' networks (accounts' sources and `trusted_sources`).
    pub customers: Vec<IpNet>,
    /// The account header, removed from every forwarded request unless
    /// `forward_account_header`.
    pub account_header: Option<Arc<str>>,
    pub forward_account_header: bool,
    /// Lower-cased User-Agent substrings of SIP scanners, whose requests are dropped.
    pub scanners: Vec<String>,
}

impl ProxyConfig {
    /// A config advertising `host:port` and listening on `local`; the rest defaults (no
    /// Record-Route, no upstream, open relay, everyone trusted, 65535-byte messages, a
    /// key derived from the address) and may be set after. For tests and benchmarks.
    pub fn new(advertise: &str, local: Vec<SocketAddr>) -> ProxyConfig {
        let hp = HostPort::parse(advertise).unwrap_or(HostPort { host: advertise.to_string(), port: 5060 });
        let advert = Advert::new(hp);
        let v6 = advert.hp.ip().is_some_and(|ip| ip.is_ipv6());
        ProxyConfig {
            mode: ServerMode::Proxy,
            advertise_v4: (!v6).then(|| advert.clone()),
            advertise_v6: v6.then_some(advert),
            local,
            record_route: false,
            upstream: None,
            max_message_bytes: 65535,
            key: Key::derive(advertise.as_bytes()),
            relay_allowed: None,
            far_side: Vec::new(),
            customers: Vec::new(),
            trusted: vec!["0.0.0.0/0".parse().unwrap_or_default(), "::/0".parse().unwrap_or_default()],
            account_header: None,
            forward_account_header: false,
            scanners: Vec::new(),
        }
    }

    /// From the loaded configuration and the key (`[server] secret` or the state file).
    pub fn from_config(cfg: &Config, key: Key) -> ProxyConfig {
        let s: &ServerConfig = &cfg.server;
        let host_net = |ip: IpAddr| IpNet::from(ip);
        let upstream_net = s.upstream.as_ref().map(|u| host_net(u.addr.ip()));
        let mut far_side: Vec<IpNet> = upstream_net.into_iter().collect();
        far_side.extend(s.relay_to.iter().copied());
        let (trusted_sources, customers, account_header, forward_account_header) = match &cfg.screening {
            Some(sc) => (
                sc.trusted_sources.clone(),
                sc.accounts.iter().flat_map(|a| a.sources.iter().copied()).collect::<Vec<_>>(),
                sc.account_header.clone(),
                sc.forward_account_header,
            ),
            None => (Vec::new(), Vec::new(), None, false),
        };
        let mut customers = customers;
        customers.extend(trusted_sources.iter().copied());
        let relay_allowed = (s.upstream.is_some() || !s.relay_to.is_empty()).then(|| {
            let mut nets = far_side.clone();
            nets.extend(customers.iter().copied());
            nets
        });
        let mut trusted = trusted_sources;
        trusted.extend(upstream_net);
        ProxyConfig {
            mode: s.mode,
            advertise_v4: s.advertise_v4.clone().map(Advert::new),
            advertise_v6: s.advertise_v6.clone().map(Advert::new),
            local: s.listen.iter().map(|l| l.addr).collect(),
            record_route: s.record_route,
            upstream: s.upstream.clone(),
            max_message_bytes: s.max_message_bytes,
            key,
            relay_allowed,
            far_side,
            customers,
            trusted,
            account_header,
            forward_account_header,
            scanners: cfg.security.as_ref().map(|s| s.scanner_user_agents.clone()).unwrap_or_default(),
        }
    }

    /// Our address as seen from `peer`'s address family (the other one when that family
    /// has no listener).
    pub fn advert_for(&self, peer: &SocketAddr) -> &Advert {
        let (same, other) = if peer.is_ipv6() {
            (&self.advertise_v6, &self.advertise_v4)
        } else {
            (&self.advertise_v4, &self.advertise_v6)
        };
        match same.as_ref().or(other.as_ref()) {
            Some(a) => a,
            // Both None only for a hand-built config; ProxyConfig::new always sets one.
            None => {
                static FALLBACK: std::sync::LazyLock<Advert> =
                    std::sync::LazyLock::new(|| Advert::new(HostPort { host: "127.0.0.1".into(), port: 5060 }));
                &FALLBACK
            }
        }
    }

    /// Is `host[:port]` one of our advertised addresses?
    pub fn is_our_address(&self, host: &[u8], port: Option<u16>) -> bool {
        [&self.advertise_v4, &self.advertise_v6].into_iter().flatten().any(|a| a.matches(host, port))
    }

    pub fn relay_permits(&self, dest: IpAddr) -> bool {
        self.relay_allowed.as_ref().is_none_or(|nets| nets.iter().any(|n| n.contains(&dest)))
    }

    pub fn is_far_side(&self, src: IpAddr) -> bool {
        self.far_side.iter().any(|n| n.contains(&src))
    }

    /// Can a request from `src` be the callee's end of a dialog? From the far side; when no
    /// far side is configured, from anywhere but the customers' networks.
    pub fn may_be_callee_side(&self, src: IpAddr) -> bool {
        if self.far_side.is_empty() {
            return !self.customers.iter().any(|n| n.contains(&src));
        }
        self.is_far_side(src)
    }

    pub fn is_trusted(&self, src: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&src))
    }
}
