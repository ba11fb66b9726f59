//! Lookups the core asks for (`Action::Lookup`): fetch an x5u certificate chain over HTTPS,
//! store it in the screen's certificate cache, then resume every INVITE that waited for it.
//! One fetch per URL however many calls wait; the calls waiting are bounded by
//! `[stir] max_pending` (beyond it a call is decided at once, as if the certificate were
//! unavailable). Nothing here blocks a thread that handles messages: fetches run on tokio.
use super::Shell;
use crate::proxy::{Action, Held};
use crate::screen::quota::shared::{Reservation, StoreFailure};
use crate::screen::stir::x5u::{check_url, is_public};
use crate::screen::stir::{StirConfig, cert::pem_blocks};
use crate::screen::{Counting, Decision, Lookup, StirState};
use crate::telemetry::metrics as m;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Largest x5u response read (a leaf and a few intermediates are 2-6 KB).
pub const MAX_CERT_BYTES: usize = 64 * 1024;
/// Longest HTTP cache lifetime honoured.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

pub struct Lookups {
    shell: Mutex<Weak<Shell>>,
    rt: tokio::runtime::Handle,
    waiting: Mutex<Waiting>,
    /// The HTTPS client for the current `[stir]` settings (rebuilt when they change).
    client: Mutex<Option<(ClientKey, reqwest::Client)>>,
}

#[derive(Default)]
struct Waiting {
    by_url: HashMap<String, Vec<Held>>,
    total: usize,
}

#[derive(Clone, PartialEq, Eq)]
struct ClientKey {
    roots: Vec<Vec<u8>>,
    allow_private: bool,
    timeout: Duration,
}

impl Lookups {
    pub fn new(rt: tokio::runtime::Handle) -> Lookups {
        Lookups { shell: Mutex::new(Weak::new()), rt, waiting: Default::default(), client: Mutex::new(None) }
    }

    pub fn attach(&self, shell: &Arc<Shell>) {
        *lock(&self.shell) = Arc::downgrade(shell);
    }

    /// Calls waiting for a certificate now.
    pub fn pending(&self) -> usize {
        lock(&self.waiting).total
    }

    /// Take on a lookup for a held INVITE.
    pub fn submit(&self, lookup: Lookup, held: Held) {
        let Some(shell) = lock(&self.shell).upgrade() else { return };
        let url = match lookup {
            Lookup::Certificate { url } => url,
            Lookup::Counters(counting) => return self.count(shell, *counting, held),
        };
        let screen = shell.proxy.screen();
        let Some(stir) = screen.stir() else { return shell.resume(&held, false) };
        let Some(cfg) = stir.config.load_full() else { return shell.resume(&held, false) };
        let now = shell.clock.now();
        let first = {
            let mut w = lock(&self.waiting);
            if w.total >= cfg.max_pending {
                drop(w);
                tracing::debug!(url, "stir.max_pending reached: deciding without the certificate");
                return shell.resume(&held, false);
            }
            w.total += 1;
            let list = w.by_url.entry(url.clone()).or_default();
            list.push(held);
            let first = list.len() == 1;
            m::stir_pending(w.total);
            first
        };
        if !first {
            return;
        }
        if !stir.certs.begin_fetch(&url, now, cfg.fetch_timeout * 2) {
            // The cache has no room for another URL: decide without it.
            return self.finish(&shell, &url, false);
        }
        self.spawn_fetch(shell, cfg, url, true);
    }

    /// Reserve the call's counters in the cluster store, then decide and resume it.
    fn count(&self, shell: Arc<Shell>, counting: Counting, held: Held) {
        let Some(cluster) = shell.cluster.clone() else {
            let d = shell.proxy.screen().counted(counting, Err(StoreFailure::Down), shell.clock.now());
            return shell.resume_counted(&held, d);
        };
        self.rt.spawn(async move {
            let started = Instant::now();
            let answer = cluster.reserve(&counting.reservation).await;
            if let Ok(t) = &answer {
                m::cluster_reservation(t.admitted, started.elapsed().as_secs_f64());
            }
            let d = shell.proxy.screen().counted(counting, answer, shell.clock.now());
            shell.resume_counted(&held, d);
        });
    }

    /// Take back a reservation in the cluster store (the call was not forwarded).
    pub fn release(&self, r: Box<Reservation>) {
        let Some(shell) = lock(&self.shell).upgrade() else { return };
        let Some(cluster) = shell.cluster.clone() else { return };
        self.rt.spawn(async move { cluster.release(&r).await });
    }

    /// Fetch `url`, store the outcome and (when `resume`) hand its waiting calls back.
    fn spawn_fetch(&self, shell: Arc<Shell>, cfg: Arc<StirConfig>, url: String, resume: bool) {
        let client = match self.client(&cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "stir: cannot build the HTTPS client");
                let _ = complete(&shell, &cfg, &url, Err(e), None);
                if resume {
                    self.finish(&shell, &url, true);
                }
                return;
            }
        };
        self.rt.spawn(async move {
            let started = Instant::now();
            let fetched = fetch(&client, &url, &cfg).await;
            m::stir_fetch(if fetched.is_ok() { "ok" } else { "error" }, started.elapsed().as_secs_f64());
            let lifetime = fetched.as_ref().ok().and_then(|f| f.1);
            if let Err(e) = &fetched {
                tracing::info!(url, error = %e, "x5u fetch failed");
            }
            let _ = complete(&shell, &cfg, &url, fetched.map(|f| f.0), lifetime);
            if resume {
                shell.lookups.finish(&shell, &url, true);
            }
        });
    }

    /// Resume every call waiting for `url`.
    fn finish(&self, shell: &Shell, url: &str, wait: bool) {
        let held = {
            let mut w = lock(&self.waiting);
            let held = w.by_url.remove(url).unwrap_or_default();
            w.total -= held.len().min(w.total);
            m::stir_pending(w.total);
            held
        };
        for h in &held {
            shell.resume(h, wait);
        }
    }

    /// Start background refreshes of chains due for one (run every minute).
    pub fn refresh_due(&self) {
        let Some(shell) = lock(&self.shell).upgrade() else { return };
        let screen = shell.proxy.screen();
        let Some(stir) = screen.stir() else { return };
        let Some(cfg) = stir.config.load_full() else { return };
        let now = shell.clock.now();
        for url in stir.certs.due_for_refresh(now) {
            if stir.certs.begin_fetch(&url, now, cfg.fetch_timeout * 2) {
                self.spawn_fetch(shell.clone(), cfg.clone(), url, false);
            }
        }
    }

    fn client(&self, cfg: &StirConfig) -> Result<reqwest::Client, String> {
        let key = ClientKey {
            roots: cfg.x5u_roots.clone(),
            allow_private: cfg.x5u_allow_private,
            timeout: cfg.fetch_timeout,
        };
        let mut slot = lock(&self.client);
        if let Some((k, c)) = slot.as_ref()
            && *k == key
        {
            return Ok(c.clone());
        }
        let c = build_client(&key)?;
        *slot = Some((key, c.clone()));
        Ok(c)
    }
}

fn complete(
    shell: &Shell,
    cfg: &StirConfig,
    url: &str,
    fetched: Result<Vec<Vec<u8>>, String>,
    lifetime: Option<Duration>,
) -> Option<()> {
    let screen = shell.proxy.screen();
    let stir: &StirState = screen.stir()?;
    let life = lifetime.map_or(cfg.cert_cache, |l| l.max(cfg.cert_cache).min(MAX_LIFETIME));
    stir.certs.complete(url, fetched, &cfg.trust, shell.clock.now(), life);
    Some(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn build_client(key: &ClientKey) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    for r in &key.roots {
        roots.add(rustls::pki_types::CertificateDer::from(r.clone())).map_err(|e| format!("x5u_roots: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(key.timeout)
        .connect_timeout(key.timeout)
        .no_proxy()
        .dns_resolver(Arc::new(PublicResolver { allow_private: key.allow_private }))
        .user_agent(concat!("sipguard/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// Resolves names and keeps only public addresses (unless `x5u_allow_private`), so a
/// name pointing at the operator's own network is not fetched (SSRF).
struct PublicResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| allow || is_public(a.ip())).collect();
            if kept.is_empty() {
                return Err(format!("{} resolves to no public address", name.as_str()).into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// GET the x5u: 200 only, at most `MAX_CERT_BYTES`, PEM (a chain) or one DER certificate.
/// Also the HTTP cache lifetime (Cache-Control max-age) when the server gives one.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    cfg: &StirConfig,
) -> Result<(Vec<Vec<u8>>, Option<Duration>), String> {
    let u = check_url(url, cfg.x5u_allow_private).map_err(|e| e.to_string())?;
    let work = async {
        let mut resp = client.get(u).send().await.map_err(|e| format!("request failed: {e}"))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("HTTP status {}", resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_CERT_BYTES as u64) {
            return Err(format!("response larger than {MAX_CERT_BYTES} bytes"));
        }
        let max_age =
            resp.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the body: {e}"))? {
            if body.len() + chunk.len() > MAX_CERT_BYTES {
                return Err(format!("response larger than {MAX_CERT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let certs = pem_blocks(&body, "CERTIFICATE")?;
        if certs.is_empty() {
            return Err("no certificate in the response".into());
        }
        Ok((certs, max_age))
    };
    tokio::time::timeout(cfg.fetch_timeout, work)
        .await
        .map_err(|_| format!("no answer within {} ms", cfg.fetch_timeout.as_millis()))?
}

/// One fetch outside the proxy (the operator CLI), with the same URL policy and limits.
pub async fn fetch_once(url: &str, cfg: &StirConfig) -> Result<Vec<Vec<u8>>, String> {
    let key =
        ClientKey { roots: cfg.x5u_roots.clone(), allow_private: cfg.x5u_allow_private, timeout: cfg.fetch_timeout };
    let client = build_client(&key)?;
    fetch(&client, url, cfg).await.map(|f| f.0)
}

/// `max-age=N` of a Cache-Control value (`no-store`/`no-cache` give none).
fn max_age(v: &str) -> Option<Duration> {
    let mut age = None;
    for d in v.split(',').map(str::trim) {
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return None;
        }
        if let Some(n) = d.strip_prefix("max-age=").or_else(|| d.strip_prefix("s-maxage=")) {
            age = n.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    age
}

impl Shell {
    /// Hand a held INVITE back to the core and carry out what it returns.
    pub fn resume(&self, held: &Held, wait: bool) {
        let mut actions = Vec::new();
        self.run_held(|now, out| self.proxy.resume(now, held, wait, out), None, &mut actions);
        self.dispatch(&mut actions);
    }

    /// Hand back an INVITE that waited for the cluster store, with its decision.
    pub fn resume_counted(&self, held: &Held, decision: Decision) {
        let mut actions = Vec::new();
        self.resume_counted_into(held, decision, &mut actions);
        self.dispatch(&mut actions);
    }

    /// As `resume_counted`, leaving the actions for the caller (a UDP thread sends them
    /// with its batch).
    pub fn resume_counted_into(&self, held: &Held, decision: Decision, actions: &mut Vec<Action>) {
        let charge = decision.charge.as_ref().and_then(|c| c.shared.clone());
        let mut decision = Some(decision);
        self.run_held(
            |now, out| {
                if let Some(d) = decision.take() {
                    self.proxy.resume_counted(now, held, d, out)
                }
            },
            charge,
            actions,
        );
    }

    /// Run `core` on a held INVITE (unless stopping: then a reservation made for it is
    /// taken back) and record its decisions; its actions are left in `actions`.
    fn run_held(
        &self,
        core: impl FnOnce(std::time::SystemTime, &mut Vec<Action>),
        charge: Option<Box<Reservation>>,
        actions: &mut Vec<Action>,
    ) {
        let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
        if self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(r) = charge {
                self.lookups.release(r);
            }
            return;
        }
        let from = actions.len();
        core(self.clock.now(), actions);
        if let Some(sink) = &self.decisions {
            for a in actions.get(from..).unwrap_or_default() {
                if let Action::Decided(d) = a {
                    sink.record(d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_control_max_age() {
        use super::max_age;
        use std::time::Duration;
        assert_eq!(max_age("public, max-age=604800"), Some(Duration::from_secs(604_800)));
        assert_eq!(max_age("no-store, max-age=60"), None);
        assert_eq!(max_age("private"), None);
    }
}
