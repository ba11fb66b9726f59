//! The Redis side of the shared counters: key names, the Lua scripts that check and count
//! a call in one round trip, and the connections (a few multiplexed connections to one
//! Redis, each pipelining every request in flight, or one Redis Cluster connection).
//!
//! Keys: `<prefix>{<account>}:<counter>:<window>`. The account is the hash tag, so all of
//! an account's counters sit in one Redis Cluster slot and one script may touch them all.
//! The window is in the name (hour start, local day, week's Monday), so a new window is a
//! new key and nothing needs resetting; keys expire a day after their window ends.
use crate::config::cluster::RedisConfig;
use crate::screen::quota::shared::{self, Reservation, Tally};
use crate::screen::quota::{CountersSnapshot, Usage, Windows};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisResult, Script, ScriptInvocation};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Check every cap; when all hold, count the call (INCR / HINCRBY + EXPIREAT).
/// KEYS: hour, day, caller-ID/day hash, callee/day hash, callee/week hash.
/// ARGV: five caps (-1: none; a per-number counter without a cap is not kept), caller,
/// callee, expiry of hour, day and week keys. Returns {admitted, five values before it}.
const RESERVE: &str = r"
local caps = {}
for i = 1, 5 do caps[i] = tonumber(ARGV[i]) end
local field = {nil, nil, ARGV[6], ARGV[7], ARGV[7]}
local exp = {ARGV[8], ARGV[9], ARGV[9], ARGV[9], ARGV[10]}
local cur = {tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(redis.call('GET', KEYS[2]) or '0'), 0, 0, 0}
for i = 3, 5 do
  if caps[i] >= 0 then cur[i] = tonumber(redis.call('HGET', KEYS[i], field[i]) or '0') end
end
local ok = 1
for i = 1, 5 do
  if caps[i] >= 0 and cur[i] >= caps[i] then ok = 0 end
end
if ok == 1 then
  for i = 1, 2 do
    redis.call('INCR', KEYS[i])
    redis.call('EXPIREAT', KEYS[i], exp[i])
  end
  for i = 3, 5 do
    if caps[i] >= 0 then
      redis.call('HINCRBY', KEYS[i], field[i], 1)
      redis.call('EXPIREAT', KEYS[i], exp[i])
    end
  end
end
return {ok, cur[1], cur[2], cur[3], cur[4], cur[5]}
";

/// Take back one call: each kept counter goes down by one, never below zero.
/// KEYS as RESERVE; ARGV: three flags (per-number counters kept: 1/0), caller, callee.
const RELEASE: &str = r"
for i = 1, 2 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
local field = {nil, nil, ARGV[4], ARGV[5], ARGV[5]}
for i = 3, 5 do
  if ARGV[i - 2] == '1' and tonumber(redis.call('HGET', KEYS[i], field[i]) or '0') > 0 then
    if redis.call('HINCRBY', KEYS[i], field[i], -1) <= 0 then redis.call('HDEL', KEYS[i], field[i]) end
  end
end
return 1
";

/// Add counts made on this node while Redis was out of reach (atomically per chunk).
/// KEYS as RESERVE; ARGV: hour count, day count, expiry of hour, day, week, then for each
/// of the three hashes: n, then n (number, count) pairs.
const ADD: &str = r"
local exp = {ARGV[3], ARGV[4], ARGV[4], ARGV[4], ARGV[5]}
for i = 1, 2 do
  local n = tonumber(ARGV[i])
  if n > 0 then
    redis.call('INCRBY', KEYS[i], n)
    redis.call('EXPIREAT', KEYS[i], exp[i])
  end
end
local at = 6
for i = 3, 5 do
  local n = tonumber(ARGV[at])
  at = at + 1
  for j = 1, n do
    redis.call('HINCRBY', KEYS[i], ARGV[at], tonumber(ARGV[at + 1]))
    at = at + 2
  end
  if n > 0 then redis.call('EXPIREAT', KEYS[i], exp[i]) end
end
return 1
";

/// Numbers per ADD script call: keeps each call (and the time Redis spends in it) short.
const ADD_CHUNK: usize = 2000;

pub struct Scripts {
    reserve: Script,
    release: Script,
    add: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts { reserve: Script::new(RESERVE), release: Script::new(RELEASE), add: Script::new(ADD) }
    }
}

/// The account as it appears inside the hash tag: `{`, `}`, `%` and bytes outside printable
/// ASCII are %-escaped, so an account id can neither end the tag nor collide with another.
fn tag(account: &str) -> String {
    let mut out = String::with_capacity(account.len());
    for b in account.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b'%') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The five keys of an account's counters for the windows `w`.
pub fn keys(prefix: &str, account: &str, w: &Windows) -> [String; 5] {
    let t = tag(account);
    [
        format!("{prefix}{{{t}}}:hour:{}", w.hour),
        format!("{prefix}{{{t}}}:day:{}", w.day),
        format!("{prefix}{{{t}}}:caller_day:{}", w.day),
        format!("{prefix}{{{t}}}:callee_day:{}", w.day),
        format!("{prefix}{{{t}}}:callee_week:{}", w.week),
    ]
}

/// A connection that pipelines every request handed to it.
#[derive(Clone)]
pub enum Conn {
    One(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn invoke<T: FromRedisValue>(&mut self, inv: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Conn::One(c) => inv.invoke_async(c).await,
            Conn::Cluster(c) => inv.invoke_async(c).await,
        }
    }

    async fn pipe<T: FromRedisValue>(&mut self, p: &redis::Pipeline) -> RedisResult<T> {
        match self {
            Conn::One(c) => p.query_async(c).await,
            Conn::Cluster(c) => p.query_async(c).await,
        }
    }

    /// PING: whether the server answers.
    pub async fn ping(&mut self) -> RedisResult<()> {
        let cmd = redis::cmd("PING");
        match self {
            Conn::One(c) => c.req_packed_command(&cmd).await.map(drop),
            Conn::Cluster(c) => c.req_packed_command(&cmd).await.map(drop),
        }
    }
}

/// The connections to the configured Redis: `connections` of them to a single server,
/// used in turn, or one cluster connection (it keeps one per cluster node itself).
pub struct Pool {
    first: Conn,
    others: Vec<Conn>,
    next: AtomicUsize,
}

impl Pool {
    pub async fn connect(cfg: &RedisConfig) -> RedisResult<Pool> {
        let mut conns = if cfg.cluster {
            let client = redis::cluster::ClusterClientBuilder::new(cfg.urls.clone())
                .connection_timeout(cfg.timeout.max(std::time::Duration::from_millis(200)))
                .response_timeout(super::LATE_ANSWER)
                .retries(0)
                .build()?;
            vec![Conn::Cluster(client.get_async_connection().await?)]
        } else {
            let url = cfg.urls.first().map(String::as_str).unwrap_or_default();
            let client = redis::Client::open(url)?;
            // Connecting runs in the background, so its timeout is longer than a call's; a
            // response may come late (`Cluster::reserve` decides the call at timeout_ms).
            let c = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(cfg.timeout.max(std::time::Duration::from_millis(200))))
                .set_response_timeout(Some(super::LATE_ANSWER));
            let mut conns = Vec::with_capacity(cfg.connections);
            for _ in 0..cfg.connections {
                conns.push(Conn::One(client.get_multiplexed_async_connection_with_config(&c).await?));
            }
            conns
        };
        let first = conns.pop().ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "no connection")))?;
        Ok(Pool { first, others: conns, next: AtomicUsize::new(0) })
    }

    fn conn(&self) -> Conn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % (self.others.len() + 1);
        match i.checked_sub(1).and_then(|i| self.others.get(i)) {
            Some(c) => c.clone(),
            None => self.first.clone(),
        }
    }

    pub async fn ping(&self) -> RedisResult<()> {
        self.conn().ping().await
    }

    pub async fn reserve(&self, s: &Scripts, prefix: &str, r: &Reservation) -> RedisResult<Tally> {
        let mut inv = s.reserve.prepare_invoke();
        for k in keys(prefix, &r.account, &r.windows) {
            inv.key(k);
        }
        for cap in r.caps {
            inv.arg(cap.map_or(-1, |c| i64::try_from(c).unwrap_or(i64::MAX)));
        }
        inv.arg(r.caller).arg(r.callee);
        for e in r.windows.expiry() {
            inv.arg(e);
        }
        let v: Vec<i64> = self.conn().invoke(&inv).await?;
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(Tally { admitted: at(0) == 1, values: [at(1), at(2), at(3), at(4), at(5)] })
    }

    pub async fn release(&self, s: &Scripts, prefix: &str, r: &Reservation) -> RedisResult<()> {
        let mut inv = s.release.prepare_invoke();
        for k in keys(prefix, &r.account, &r.windows) {
            inv.key(k);
        }
        for i in [shared::CALLER_DAY, shared::CALLEE_DAY, shared::CALLEE_WEEK] {
            inv.arg(if r.counts(i) { "1" } else { "0" });
        }
        inv.arg(r.caller).arg(r.callee);
        let _: i64 = self.conn().invoke(&inv).await?;
        Ok(())
    }

    /// Add an account's counts of windows `w` (counted here during an outage).
    pub async fn add(
        &self,
        s: &Scripts,
        prefix: &str,
        account: &str,
        c: &CountersSnapshot,
        w: &Windows,
    ) -> RedisResult<()> {
        let keys = keys(prefix, account, w);
        let expiry = w.expiry();
        let current = |window: i64, now: i64| window == now;
        let hour = if current(c.hour.0, w.hour) { c.hour.1 } else { 0 };
        let day = if current(c.day.0, w.day) { c.day.1 } else { 0 };
        let empty: &[(u64, u32)] = &[];
        let lists: [&[(u64, u32)]; 3] = [
            if current(c.caller_day.0, w.day) { &c.caller_day.1 } else { empty },
            if current(c.callee_day.0, w.day) { &c.callee_day.1 } else { empty },
            if current(c.callee_week.0, w.week) { &c.callee_week.1 } else { empty },
        ];
        let chunks = lists.iter().map(|l| l.len().div_ceil(ADD_CHUNK)).max().unwrap_or(0).max(1);
        for chunk in 0..chunks {
            let mut inv = s.add.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            // The window totals go with the first chunk only.
            let (h, d) = if chunk == 0 { (hour, day) } else { (0, 0) };
            inv.arg(h).arg(d).arg(expiry[0]).arg(expiry[1]).arg(expiry[2]);
            for l in lists {
                let part = l.chunks(ADD_CHUNK).nth(chunk).unwrap_or_default();
                inv.arg(part.len());
                for &(n, k) in part {
                    inv.arg(n).arg(k);
                }
            }
            let _: i64 = self.conn().invoke(&inv).await?;
        }
        Ok(())
    }

    /// An account's counts across the cluster, as of `w`.
    pub async fn usage(&self, prefix: &str, account: &str, w: &Windows) -> RedisResult<Usage> {
        let [h, d, cd, ed, ew] = keys(prefix, account, w);
        let mut p = redis::pipe();
        p.get(h).get(d).hlen(cd).hlen(ed).hlen(ew);
        let (h, d, cd, ed, ew): (Option<u64>, Option<u64>, u64, u64, u64) = self.conn().pipe(&p).await?;
        Ok(Usage {
            calls_this_hour: h.unwrap_or(0),
            calls_today: d.unwrap_or(0),
            caller_ids_today: cd,
            callees_today: ed,
            callees_this_week: ew,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_account_hash_tag_and_name_their_window() {
        let w = Windows { hour: 1_780_000_000, day: 739_000, week: 738_996, day_start: 0 };
        let k = keys("sipguard:", "acme", &w);
        assert_eq!(k[0], "sipguard:{acme}:hour:1780000000");
        assert_eq!(k[1], "sipguard:{acme}:day:739000");
        assert_eq!(k[4], "sipguard:{acme}:callee_week:738996");
        assert!(k.iter().all(|k| k.contains("{acme}")));
    }

    #[test]
    fn an_account_id_cannot_break_out_of_its_hash_tag() {
        let w = Windows { hour: 0, day: 1, week: 0, day_start: 0 };
        let k = keys("p:", "a}b{c%d e", &w);
        assert_eq!(k[1], "p:{a%7Db%7Bc%25d%20e}:day:1");
        assert_ne!(keys("p:", "a%7D", &w)[1], keys("p:", "a}", &w)[1]);
    }
}
