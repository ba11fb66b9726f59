//! The shared counters of a cluster (`[cluster] backend = "redis"`), on the shell's side:
//! reservations run on tokio against Redis with a deadline of `timeout_ms`, so no thread
//! that handles messages ever waits for Redis.
//!
//! Failures: a call whose reservation fails or times out is decided by `on_failure` (in
//! the policy). A connection error, or three timeouts in a row, marks Redis down: calls go
//! straight to `on_failure` without waiting, and a supervisor reconnects with backoff
//! (100 ms doubling to 5 s). The outage and the recovery are logged once each and exported
//! (`sipguard_cluster_backend_up`, `sipguard_cluster_failures_total{kind}`). Calls counted
//! on this node meanwhile are written back to Redis when it answers again, so the day's
//! totals stay right. A reservation that timed out but is counted by Redis later is taken
//! back (its call was decided without it); one whose answer never comes (the connection
//! died with it in flight) may stay counted, which errs on the strict side.
pub mod direct;
pub mod redis;
mod resp;

use crate::config::cluster::RedisConfig;
use crate::screen::quota::shared::{Reservation, StoreFailure, Tally};
use crate::screen::quota::{CountersSnapshot, Usage, Windows};
use crate::telemetry::metrics as m;
use arc_swap::ArcSwapOption;
use redis::{Pool, Scripts};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Timeouts in a row that mark Redis down.
const TIMEOUTS_FOR_DOWN: u32 = 3;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the supervisor looks for counts to write back while Redis is up (counts made
/// after a single failed call, without an outage).
const WRITE_BACK_EVERY: Duration = Duration::from_secs(1);
/// How long Redis must stay up before its recovery is logged.
const STABLE: Duration = Duration::from_secs(2);

pub struct Cluster {
    cfg: RedisConfig,
    pool: ArcSwapOption<Pool>,
    scripts: Scripts,
    up: AtomicBool,
    /// Whether an outage has been logged (so that it is logged once, and its end too).
    outage: AtomicBool,
    timeouts: AtomicU32,
    pending: AtomicUsize,
    /// Write-back chunks that did not go through, tried again under the same ids.
    unwritten: Mutex<Vec<redis::Chunk>>,
    /// Names this process's write-back chunks (with `batches`).
    nonce: u64,
    batches: AtomicU64,
}

/// Releases a pending slot when dropped.
struct Slot<'a>(&'a AtomicUsize);

/// How long a reservation may run in the background after its call was decided without
/// it (Redis stalled): the connection gives up on it then.
pub const LATE_ANSWER: Duration = Duration::from_secs(10);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Cluster {
    pub fn new(cfg: RedisConfig) -> Cluster {
        m::cluster_up(false);
        Cluster {
            cfg,
            pool: ArcSwapOption::empty(),
            scripts: Scripts::default(),
            up: AtomicBool::new(false),
            outage: AtomicBool::new(false),
            timeouts: AtomicU32::new(0),
            pending: AtomicUsize::new(0),
            unwritten: Mutex::new(Vec::new()),
            nonce: {
                let mut b = [0u8; 8];
                let _ = getrandom::fill(&mut b);
                u64::from_le_bytes(b)
            },
            batches: AtomicU64::new(0),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }

    /// Check every cap and count the call, within `timeout_ms`. A reservation that misses
    /// the deadline still runs to its end in the background: if Redis then counts the call
    /// (it was decided without it), the count is taken back, so a slow Redis neither
    /// double-counts nor charges refused calls.
    pub async fn reserve(self: &Arc<Self>, r: &Reservation) -> Result<Tally, StoreFailure> {
        let pool = self.usable()?;
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.cfg.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(self.failed(StoreFailure::Overloaded));
        }
        let me = self.clone();
        let r = r.clone();
        let work = async move {
            let result = {
                let _slot = Slot(&me.pending);
                pool.reserve(&me.scripts, &me.cfg.key_prefix, &r).await
            };
            (result, me, pool, r)
        };
        // Boxed so that, past the deadline, it can go on in the background without a task
        // (and a channel) per call when it does not.
        let mut work = Box::pin(work);
        tokio::select! {
            (result, ..) = &mut work => match result {
                Ok(t) => {
                    self.answered();
                    Ok(t)
                }
                Err(e) => Err(self.failed(classify(&e))),
            },
            _ = tokio::time::sleep(self.cfg.timeout) => {
                tokio::spawn(async move {
                    // Decided without it: take the count back on the same connection, up or not.
                    if let (Ok(t), me, pool, late) = work.await
                        && t.admitted
                    {
                        let release = pool.release(&me.scripts, &me.cfg.key_prefix, &late);
                        if !matches!(tokio::time::timeout(LATE_ANSWER, release).await, Ok(Ok(()))) {
                            m::cluster_failure(StoreFailure::Timeout.label());
                        }
                    }
                });
                Err(self.failed(StoreFailure::Timeout))
            }
        }
    }

    /// Take back a reserved call that was not forwarded. Best effort: a failure is
    /// counted, and errs on the strict side (the call stays counted).
    pub async fn release(&self, r: &Reservation) {
        let Ok(pool) = self.usable() else { return };
        let result =
            tokio::time::timeout(self.cfg.timeout * 4, pool.release(&self.scripts, &self.cfg.key_prefix, r)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.failed(classify(&e));
            }
            Err(_) => {
                self.failed(StoreFailure::Timeout);
            }
        }
    }

    /// An account's counts across the cluster. (A slow answer here does not count
    /// towards marking Redis down: only calls do.)
    pub async fn usage(&self, account: &str, w: &Windows) -> Result<Usage, StoreFailure> {
        let pool = self.usable()?;
        match tokio::time::timeout(self.cfg.timeout * 4, pool.usage(&self.cfg.key_prefix, account, w)).await {
            Ok(Ok(u)) => Ok(u),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(StoreFailure::Timeout),
        }
    }

    /// Counts waiting to be written back (kept in the state file meanwhile).
    pub fn unwritten(&self) -> Vec<(Arc<str>, CountersSnapshot)> {
        lock(&self.unwritten).iter().map(|c| (c.account.clone(), c.snapshot())).collect()
    }

    /// Write the chunks waiting and `counts` through `pool`; those that fail wait for the
    /// next try, under the same ids (so a chunk whose reply was lost is not added twice).
    async fn write_back(&self, pool: &Pool, counts: Vec<(Arc<str>, CountersSnapshot)>, w: &Windows) -> bool {
        let mut todo = std::mem::take(&mut *lock(&self.unwritten));
        for (account, snap) in &counts {
            let id = format!("{}-{}", self.nonce, self.batches.fetch_add(1, Ordering::Relaxed));
            todo.extend(redis::chunks(&id, account, snap, w));
        }
        // Chunks of windows that have ended since are dropped: nothing reads them.
        todo.retain(|c| c.windows.day == w.day || c.windows.week == w.week);
        let mut left = Vec::new();
        let mut written = 0u64;
        for c in todo {
            match tokio::time::timeout(Duration::from_secs(5), pool.add(&self.scripts, &self.cfg.key_prefix, &c)).await
            {
                Ok(Ok(())) => written += c.day,
                Ok(Err(e)) => {
                    m::cluster_failure(classify(&e).label());
                    left.push(c);
                }
                Err(_) => {
                    m::cluster_failure(StoreFailure::Timeout.label());
                    left.push(c);
                }
            }
        }
        if written > 0 {
            tracing::info!(calls = written, "cluster: wrote back the calls counted on this node");
        }
        let ok = left.is_empty();
        lock(&self.unwritten).extend(left);
        ok
    }

    fn usable(&self) -> Result<Arc<Pool>, StoreFailure> {
        if !self.is_up() {
            m::cluster_failure(StoreFailure::Down.label());
            return Err(StoreFailure::Down);
        }
        self.pool.load_full().ok_or(StoreFailure::Down)
    }

    /// A call's reservation was answered: timeouts in a row start again from zero.
    pub fn answered(&self) {
        self.timeouts.store(0, Ordering::Relaxed);
    }

    pub fn scripts(&self) -> &Scripts {
        &self.scripts
    }

    /// Count a failure; mark Redis down when it says the connection is gone.
    pub fn failed(&self, f: StoreFailure) -> StoreFailure {
        m::cluster_failure(f.label());
        let down = match f {
            StoreFailure::Connection => true,
            StoreFailure::Timeout => self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_FOR_DOWN,
            _ => false,
        };
        if down && self.up.swap(false, Ordering::Relaxed) {
            m::cluster_up(false);
            if !self.outage.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    failure = f.label(),
                    on_failure = ?self.cfg.on_failure,
                    "cluster: Redis unreachable; calls are decided by on_failure until it returns"
                );
            }
        }
        f
    }

    /// Connect and check that Redis answers within `timeout_ms`, several times in a row: a
    /// Redis that answers, but slower than calls may wait, stays down.
    async fn connect(&self) -> Result<Pool, ::redis::RedisError> {
        let slow = || ::redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let pool = tokio::time::timeout(BACKOFF_MAX, Pool::connect(&self.cfg)).await.map_err(|_| slow())??;
        for _ in 0..TIMEOUTS_FOR_DOWN {
            tokio::time::timeout(self.cfg.timeout, pool.ping()).await.map_err(|_| slow())??;
        }
        Ok(pool)
    }

    /// Keep Redis connected and this node's counts written back, until the process ends.
    /// `take_local` hands over (and empties) the counts made on this node; `save` writes
    /// the state file (called once they are taken, so that a crash after the write-back
    /// cannot count them again at the next start); `windows` gives the current windows.
    pub async fn supervise<T, S, W>(self: Arc<Self>, take_local: T, save: S, windows: W)
    where
        T: Fn() -> Vec<(Arc<str>, CountersSnapshot)>,
        S: Fn(),
        W: Fn() -> Windows,
    {
        let mut backoff = BACKOFF_MIN;
        let mut up_since: Option<tokio::time::Instant> = None;
        loop {
            if self.is_up() {
                backoff = BACKOFF_MIN;
                if let Some(pool) = self.pool.load_full() {
                    self.flush(&pool, &take_local, &save, &windows).await;
                }
                // The recovery is logged once Redis has stayed up a while, so a flapping
                // Redis gives one outage line and one recovery line.
                if up_since.is_some_and(|t| t.elapsed() >= STABLE) && self.outage.swap(false, Ordering::Relaxed) {
                    tracing::warn!("cluster: Redis reachable again; shared counters in use");
                }
                tokio::time::sleep(WRITE_BACK_EVERY).await;
                continue;
            }
            up_since = None;
            match self.connect().await {
                Ok(pool) => {
                    // The counts made meanwhile go in before any call is counted there.
                    self.flush(&pool, &take_local, &save, &windows).await;
                    self.pool.store(Some(Arc::new(pool)));
                    self.timeouts.store(0, Ordering::Relaxed);
                    self.up.store(true, Ordering::Relaxed);
                    up_since = Some(tokio::time::Instant::now());
                    m::cluster_up(true);
                    if !self.outage.load(Ordering::Relaxed) {
                        tracing::info!(redis = %self.cfg.urls.join(","), "cluster: connected to Redis");
                    }
                }
                Err(e) => {
                    m::cluster_failure(classify(&e).label());
                    if !self.outage.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            on_failure = ?self.cfg.on_failure,
                            "cluster: Redis unreachable; calls are decided by on_failure until it returns"
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn flush<T, S, W>(&self, pool: &Pool, take_local: &T, save: &S, windows: &W)
    where
        T: Fn() -> Vec<(Arc<str>, CountersSnapshot)>,
        S: Fn(),
        W: Fn() -> Windows,
    {
        let counts = take_local();
        if counts.is_empty() && lock(&self.unwritten).is_empty() {
            return;
        }
        save();
        if !self.write_back(pool, counts, &windows()).await {
            save();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn classify(e: &::redis::RedisError) -> StoreFailure {
    // A cluster error (MOVED, ASK, TRYAGAIN left after the retries) fails that call only.
    if e.is_timeout() {
        StoreFailure::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreFailure::Connection
    } else {
        StoreFailure::Script
    }
}
