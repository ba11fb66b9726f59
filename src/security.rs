//! Flood defence (`[security]`): each source IP may send `per_source_per_second` messages a
//! second on average, in bursts of as many; a source that sends more is banned for
//! `ban_seconds` and gets nothing back (no reply to amplify) until the ban ends. Sources in
//! `exempt` (trunks, the upstream) are never limited. Like Kamailio's pike, but exact: a
//! token bucket per source, so the rule can be stated in one sentence and tested.
//!
//! Pure over `now` (passed in) and the source address; sharded, each shard behind its own
//! lock, so threads do not serialise on it. Both maps are keyed by network data, so they
//! are bounded (`MAX_TRACKED` sources, `MAX_BANS` bans), expire (an idle source's bucket is
//! full again and can be forgotten) and use a keyed hash (SipHash-1-3 under the secret).

use crate::sip::branch::Key;
use ipnet::IpNet;
use siphasher::sip::SipHasher13;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Sources whose buckets are tracked at once, over all shards.
pub const MAX_TRACKED: usize = 262_144;
/// Bans held at once, over all shards.
pub const MAX_BANS: usize = 65_536;
const SHARDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    pub per_source_per_second: u32,
    pub ban: Duration,
    pub exempt: Vec<IpNet>,
}

impl GuardConfig {
    /// From `[security]`: its `exempt` plus the parties the config already names (the
    /// upstream, `relay_to`, `trusted_sources`, the accounts' networks), whose volume the
    /// quotas govern. The guard is for everyone else.
    pub fn from_config(cfg: &crate::config::Config) -> Option<GuardConfig> {
        let sec = cfg.security.as_ref()?;
        let mut exempt = sec.exempt.clone();
        exempt.extend(cfg.server.upstream.as_ref().map(|u| IpNet::from(u.addr.ip())));
        exempt.extend(cfg.server.relay_to.iter().copied());
        if let Some(sc) = &cfg.screening {
            exempt.extend(sc.trusted_sources.iter().copied());
            exempt.extend(sc.accounts.iter().flat_map(|a| a.sources.iter().copied()));
        }
        Some(GuardConfig { per_source_per_second: sec.per_source_per_second, ban: sec.ban, exempt })
    }
}

/// What to do with a message from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Banned: drop it silently.
    Banned,
    /// This message put the source over its rate: it is banned from now (log this once).
    NewBan(Ban),
    /// Over the rate, but the ban table is full: dropped, not banned.
    Over,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ban {
    pub source: IpAddr,
    /// Unix seconds.
    pub since: u64,
    pub until: u64,
    /// Messages dropped since the ban started.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Micro-messages left (1 message = 1_000_000).
    tokens: u64,
    /// When `tokens` was last brought up to date, in µs since the epoch.
    at: u64,
}

#[derive(Clone)]
struct Keyed([u8; 16]);

impl BuildHasher for Keyed {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_key(&self.0)
    }
}

struct Shard {
    buckets: HashMap<IpAddr, Bucket, Keyed>,
    bans: HashMap<IpAddr, Ban, Keyed>,
    /// When full buckets were last swept out (µs): at most one sweep per `SWEEP_US`, so
    /// a flood of new sources costs a sweep per interval, not one per message.
    swept: u64,
}

const SWEEP_US: u64 = 100_000;

pub struct Guard {
    /// None: `[security]` is off and every message is admitted.
    cfg: arc_swap::ArcSwapOption<GuardConfig>,
    shards: Vec<Mutex<Shard>>,
    pick: Keyed,
}

const UNIT: u64 = 1_000_000;

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

impl Guard {
    pub fn new(cfg: Option<GuardConfig>, key: &Key) -> Guard {
        let k = key.map_key(crate::sip::branch::Purpose::Facts, &[b"security shards"]).to_le_bytes();
        let mut sk = [0u8; 16];
        sk[..8].copy_from_slice(&k);
        sk[8..].copy_from_slice(&key.map_key(crate::sip::branch::Purpose::Facts, &[b"security maps"]).to_le_bytes());
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    buckets: HashMap::with_hasher(Keyed(sk)),
                    bans: HashMap::with_hasher(Keyed(sk)),
                    swept: 0,
                })
            })
            .collect();
        Guard { cfg: arc_swap::ArcSwapOption::from(cfg.map(std::sync::Arc::new)), shards, pick: Keyed(sk) }
    }

    /// A reload: new limits, the bans in force stay.
    pub fn reconfigure(&self, cfg: Option<GuardConfig>) {
        self.cfg.store(cfg.map(std::sync::Arc::new));
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.pick.hash_one(ip) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Account for one message from `ip` at `now`.
    pub fn check(&self, now: SystemTime, ip: IpAddr) -> Admit {
        let cfg = self.cfg.load();
        let Some(cfg) = cfg.as_deref() else { return Admit::Yes };
        if cfg.exempt.iter().any(|n| n.contains(&ip)) {
            return Admit::Yes;
        }
        let t = micros(now);
        let rate = u64::from(cfg.per_source_per_second.max(1));
        let full = rate * UNIT;
        let mut s = self.shard(ip);
        if let Some(b) = s.bans.get_mut(&ip) {
            if t / UNIT < b.until {
                b.dropped += 1;
                return Admit::Banned;
            }
            s.bans.remove(&ip);
        }
        if !s.buckets.contains_key(&ip) && s.buckets.len() >= MAX_TRACKED / SHARDS {
            // Forget sources whose buckets have refilled: they are as if never seen.
            if t.saturating_sub(s.swept) >= SWEEP_US {
                s.swept = t;
                s.buckets.retain(|_, b| b.tokens + t.saturating_sub(b.at) * rate < full);
                s.bans.retain(|_, b| t / UNIT < b.until);
            }
            if s.buckets.len() >= MAX_TRACKED / SHARDS {
                // Every tracked source is active: a new one is admitted untracked rather than
                // evicting one that may be about to be banned.
                return Admit::Yes;
            }
        }
        let b = s.buckets.entry(ip).or_insert(Bucket { tokens: full, at: t });
        b.tokens = (b.tokens + t.saturating_sub(b.at) * rate).min(full);
        b.at = b.at.max(t);
        if b.tokens >= UNIT {
            b.tokens -= UNIT;
            return Admit::Yes;
        }
        if s.bans.len() >= MAX_BANS / SHARDS {
            return Admit::Over;
        }
        s.buckets.remove(&ip);
        let since = t / UNIT;
        let ban = Ban { source: ip, since, until: since + cfg.ban.as_secs().max(1), dropped: 1 };
        s.bans.insert(ip, ban);
        Admit::NewBan(ban)
    }

    /// Bans in force at `now`, oldest first.
    pub fn bans(&self, now: SystemTime) -> Vec<Ban> {
        let t = micros(now) / UNIT;
        let mut out: Vec<Ban> = self
            .shards
            .iter()
            .flat_map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.bans.values().filter(|b| t < b.until).copied().collect::<Vec<_>>()
            })
            .collect();
        out.sort_by_key(|b| (b.since, b.source));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(rate: u32, ban: u64) -> Guard {
        let cfg = GuardConfig {
            per_source_per_second: rate,
            ban: Duration::from_secs(ban),
            exempt: vec!["10.9.0.0/16".parse().unwrap()],
        };
        Guard::new(Some(cfg), &Key::derive(b"t"))
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
    }

    #[test]
    fn a_source_over_its_rate_is_banned_for_the_ban_time() {
        let g = guard(10, 30);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        // A burst of 10 passes; the 11th in the same instant bans.
        for _ in 0..10 {
            assert_eq!(g.check(at(0), ip), Admit::Yes);
        }
        let Admit::NewBan(b) = g.check(at(0), ip) else { panic!("not banned") };
        assert_eq!(b.until - b.since, 30);
        assert_eq!(g.check(at(1000), ip), Admit::Banned, "nothing while banned");
        assert_eq!(g.check(at(29_999), ip), Admit::Banned);
        assert_eq!(g.bans(at(29_999)).len(), 1);
        assert_eq!(g.bans(at(29_999))[0].dropped, 3);
        assert_eq!(g.check(at(30_000), ip), Admit::Yes, "the ban ends on time, with a full bucket");
        assert!(g.bans(at(30_000)).is_empty());
    }

    #[test]
    fn the_rate_refills_and_other_sources_and_exempt_ones_are_apart() {
        let g = guard(10, 30);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        // Ten a second, evenly: never banned, for a minute.
        for i in 0..600 {
            assert_eq!(g.check(at(i * 100), ip), Admit::Yes, "message {i}");
        }
        for _ in 0..10 {
            assert_eq!(g.check(at(0), "192.0.2.8".parse().unwrap()), Admit::Yes);
        }
        // A trunk in the exempt network sends a thousand at once.
        for _ in 0..1000 {
            assert_eq!(g.check(at(0), "10.9.1.1".parse().unwrap()), Admit::Yes);
        }
    }

    #[test]
    fn many_sources_stay_within_the_bound() {
        let g = guard(1, 30);
        for i in 0..(MAX_TRACKED as u32 + 5000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_ne!(g.check(at(0), ip), Admit::Banned);
        }
        let tracked: usize = g.shards.iter().map(|s| s.lock().unwrap().buckets.len()).sum();
        assert!(tracked <= MAX_TRACKED, "{tracked}");
        // A second later every bucket has refilled: they are forgotten as new ones come.
        for i in 0..5000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            assert_eq!(g.check(at(2000), ip), Admit::Yes);
        }
        let tracked: usize = g.shards.iter().map(|s| s.lock().unwrap().buckets.len()).sum();
        assert!(tracked <= MAX_TRACKED, "{tracked}");
    }
}
