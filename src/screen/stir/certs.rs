//! The certificate cache: validated x5u chains by URL, shared by every call and thread.
//! Screening only reads it (never waits); the shell fetches a missing URL once however many
//! calls wait on it, and stores the outcome here (`complete`). Failures are cached briefly
//! so a dead certificate server is not asked once per call. Bounded: at most `MAX_URLS`
//! URLs; a full cache drops expired entries first, then refuses to cache new URLs (their
//! calls are treated as if the certificate were unavailable) rather than evicting the
//! chains calls depend on.
use super::cert::{ChainError, TrustStore, ValidChain};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub const MAX_URLS: usize = 10_000;
/// How long a failed fetch or a chain that did not validate is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// Why no chain is available for a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertFailure {
    /// Could not be fetched in time (or the URL is refused by policy).
    Unavailable(String),
    /// Fetched, but did not validate to a trust anchor.
    Untrusted(ChainError),
}

#[derive(Debug, Clone)]
pub enum Lookup {
    Ready(Arc<ValidChain>),
    Failed(CertFailure),
    /// Not cached: the shell must fetch it.
    Missing,
}

#[derive(Debug)]
enum Slot {
    Ready { chain: Arc<ValidChain>, der: Arc<Vec<Vec<u8>>>, expires: SystemTime, refresh_at: SystemTime },
    Failed { why: CertFailure, expires: SystemTime },
    Fetching { since: SystemTime },
}

#[derive(Default)]
pub struct CertCache {
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for CertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertCache({} URLs)", self.lock().len())
    }
}

impl CertCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached state of `url` at `now`. A chain outside its certificates' validity is
    /// reported as untrusted (dates) without a fetch; an expired entry as missing.
    pub fn get(&self, url: &str, now: SystemTime) -> Lookup {
        match self.lock().get(url) {
            Some(Slot::Ready { chain, expires, .. }) if *expires > now => {
                let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                if secs < chain.not_before || secs > chain.not_after {
                    Lookup::Failed(CertFailure::Untrusted(ChainError::Dates("in the x5u chain".into())))
                } else {
                    Lookup::Ready(chain.clone())
                }
            }
            Some(Slot::Failed { why, expires }) if *expires > now => Lookup::Failed(why.clone()),
            _ => Lookup::Missing,
        }
    }

    /// Claim the fetch of `url`: true for the first caller (who must fetch and `complete`),
    /// false while a fetch is in flight or the cache has no room. A claim older than
    /// `stale` (a fetch that never completed) may be taken over.
    pub fn begin_fetch(&self, url: &str, now: SystemTime, stale: Duration) -> bool {
        let mut slots = self.lock();
        match slots.get(url) {
            Some(Slot::Fetching { since }) if now.duration_since(*since).unwrap_or_default() < stale => return false,
            None if slots.len() >= MAX_URLS => {
                slots.retain(|_, s| match s {
                    Slot::Ready { expires, .. } | Slot::Failed { expires, .. } => *expires > now,
                    Slot::Fetching { since } => now.duration_since(*since).unwrap_or_default() < stale,
                });
                if slots.len() >= MAX_URLS {
                    return false;
                }
            }
            _ => {}
        }
        // A refresh keeps serving the old chain until the new one is in.
        if !matches!(slots.get(url), Some(Slot::Ready { .. })) {
            slots.insert(url.to_string(), Slot::Fetching { since: now });
        }
        true
    }

    /// Store the outcome of a fetch: the chain's DER (leaf first) validated against `trust`
    /// at `now`, kept for `lifetime`; or a failure, kept for `NEGATIVE_TTL`. A failed refresh
    /// of a chain still in date keeps the old chain.
    pub fn complete(
        &self,
        url: &str,
        fetched: Result<Vec<Vec<u8>>, String>,
        trust: &TrustStore,
        now: SystemTime,
        lifetime: Duration,
    ) -> Lookup {
        let slot = match fetched {
            Ok(der) => match trust.validate(&der, now) {
                Ok(chain) => Slot::Ready {
                    chain: Arc::new(chain),
                    der: Arc::new(der),
                    expires: now + lifetime,
                    // Refreshed in the background once 3/4 of its lifetime has passed.
                    refresh_at: now + lifetime.mul_f64(0.75),
                },
                Err(e) => Slot::Failed { why: CertFailure::Untrusted(e), expires: now + NEGATIVE_TTL },
            },
            Err(e) => Slot::Failed { why: CertFailure::Unavailable(e), expires: now + NEGATIVE_TTL },
        };
        let mut slots = self.lock();
        let keep_old = matches!((&slot, slots.get(url)), (Slot::Failed { why: CertFailure::Unavailable(_), .. },
            Some(Slot::Ready { expires, .. })) if *expires > now);
        if !keep_old {
            slots.insert(url.to_string(), slot);
        }
        drop(slots);
        self.get(url, now)
    }

    /// URLs whose chain is due for a background refresh.
    pub fn due_for_refresh(&self, now: SystemTime) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Ready { refresh_at, .. } if *refresh_at <= now))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Validate every cached chain again (new trust anchors or CRL on reload), without
    /// fetching anything.
    pub fn revalidate(&self, trust: &TrustStore, now: SystemTime) {
        let mut slots = self.lock();
        for slot in slots.values_mut() {
            if let Slot::Ready { der, expires, .. } = slot {
                match trust.validate(der, now) {
                    Ok(chain) => {
                        if let Slot::Ready { chain: c, .. } = slot {
                            *c = Arc::new(chain);
                        }
                    }
                    Err(e) => {
                        let expires = (*expires).min(now + NEGATIVE_TTL);
                        *slot = Slot::Failed { why: CertFailure::Untrusted(e), expires };
                    }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
