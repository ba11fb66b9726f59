//! The Redis side of the shared counters: key names, the Lua scripts that check and count
//! a call in one round trip, and the connections (a few multiplexed connections to one
//! Redis, each pipelining every request in flight, or one Redis Cluster connection).
//!
//! Keys: `<prefix>{<account>}:<counter>:<window>`. The account is the hash tag, so all of
//! an account's counters sit in one Redis Cluster slot and one script may touch them all.
//! The window is in the name (hour start, local day, week's Monday), so a new window is a
//! new key and nothing needs resetting; keys expire a day after their window ends.
use super::resp::Packer;
use crate::config::cluster::RedisConfig;
use crate::screen::quota::shared::{self, Reservation, Tally};
use crate::screen::quota::{CountersSnapshot, Usage, Windows};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, FromRedisValue, RedisResult, Script, ScriptInvocation};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Check every cap; when all hold, count the call (INCR / HINCRBY + EXPIREAT).
/// KEYS: hour, day, caller-ID/day hash, callee/day hash, callee/week hash.
/// ARGV: five caps (-1: none; a per-number counter without a cap is not kept), caller,
/// callee, expiry of hour, day and week keys, the most numbers a hash may hold. Returns
/// {admitted, five values before it, 1 when a hash was full}.
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
local full = 0
for i = 1, 5 do
  if caps[i] >= 0 and cur[i] >= caps[i] then ok = 0 end
end
for i = 3, 5 do
  if caps[i] >= 0 and cur[i] == 0 and redis.call('HLEN', KEYS[i]) >= tonumber(ARGV[11]) then
    ok = 0
    full = 1
  end
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
return {ok, cur[1], cur[2], cur[3], cur[4], cur[5], full}
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

/// Add counts made on this node while Redis was out of reach, atomically and once per
/// chunk: KEYS[6] marks the chunk as written (a retry after a lost reply adds nothing).
/// KEYS as RESERVE plus the marker; ARGV: hour count, day count, expiry of hour, day,
/// week, then for each of the three hashes: n, then n (number, count) pairs.
const ADD: &str = r"
if not redis.call('SET', KEYS[6], '1', 'NX', 'EX', 172800) then return 0 end
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

/// Part of an account's counts to write back, under an id of its own so that writing it
/// twice (a retry after a lost reply) counts it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub id: String,
    pub account: Arc<str>,
    pub windows: Windows,
    pub hour: u64,
    pub day: u64,
    pub lists: [Vec<(u64, u32)>; 3],
}

impl Chunk {
    /// Back to counts (to keep them in the state file while they wait for a retry).
    pub fn snapshot(&self) -> CountersSnapshot {
        let w = &self.windows;
        CountersSnapshot {
            hour: (w.hour, self.hour),
            day: (w.day, self.day),
            caller_day: (w.day, self.lists[0].clone()),
            callee_day: (w.day, self.lists[1].clone()),
            callee_week: (w.week, self.lists[2].clone()),
            seen: (0, 0),
        }
    }
}

/// An account's counts of the windows `w` cut into chunks named `<id>-<n>`; counts of
/// other windows are stale and left out.
pub fn chunks(id: &str, account: &Arc<str>, c: &CountersSnapshot, w: &Windows) -> Vec<Chunk> {
    let hour = if c.hour.0 == w.hour { c.hour.1 } else { 0 };
    let day = if c.day.0 == w.day { c.day.1 } else { 0 };
    fn pick(t: &(i64, Vec<(u64, u32)>), now: i64) -> &[(u64, u32)] {
        if t.0 == now { &t.1 } else { &[] }
    }
    let lists = [pick(&c.caller_day, w.day), pick(&c.callee_day, w.day), pick(&c.callee_week, w.week)];
    let n = lists.iter().map(|l| l.len().div_ceil(ADD_CHUNK)).max().unwrap_or(0).max(1);
    (0..n)
        .map(|i| Chunk {
            id: format!("{id}-{i}"),
            account: account.clone(),
            windows: *w,
            // The window totals go with the first chunk only.
            hour: if i == 0 { hour } else { 0 },
            day: if i == 0 { day } else { 0 },
            lists: lists.map(|l| l.chunks(ADD_CHUNK).nth(i).unwrap_or_default().to_vec()),
        })
        .collect()
}

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

impl Scripts {
    /// RESERVE for `r` as one EVALSHA (the script is loaded when the connection opens).
    pub fn reserve_cmd(&self, prefix: &str, r: &Reservation) -> Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(self.reserve.get_hash()).arg(5);
        reserve_args(prefix, r, &mut c);
        c
    }

    /// RESERVE for `r` packed onto `out` by `p` (a UDP thread's own connection): the bytes of
    /// `reserve_cmd`, without allocating.
    pub fn pack_reserve(&self, prefix: &str, r: &Reservation, p: &mut Packer, out: &mut Vec<u8>) {
        pack(&self.reserve, p, out, |p| reserve_args(prefix, r, p));
    }

    /// RELEASE for `r` packed onto `out` by `p`.
    pub fn pack_release(&self, prefix: &str, r: &Reservation, p: &mut Packer, out: &mut Vec<u8>) {
        pack(&self.release, p, out, |p| release_args(prefix, r, p));
    }

    /// RELEASE for `r` as one EVALSHA.
    pub fn release_cmd(&self, prefix: &str, r: &Reservation) -> Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(self.release.get_hash()).arg(5);
        release_args(prefix, r, &mut c);
        c
    }

    /// SCRIPT LOAD of the scripts `reserve_cmd` and `release_cmd` call, with the digest
    /// each reply must be.
    pub fn load_cmds(&self) -> [(Cmd, &str); 2] {
        [(RESERVE, &self.reserve), (RELEASE, &self.release)].map(|(code, s)| {
            let mut c = redis::cmd("SCRIPT");
            c.arg("LOAD").arg(code);
            (c, s.get_hash())
        })
    }
}

/// EVALSHA of `script` with its five keys and the arguments `args` adds.
fn pack(script: &Script, p: &mut Packer, out: &mut Vec<u8>, args: impl FnOnce(&mut Packer)) {
    p.start(&["EVALSHA", script.get_hash()]);
    p.uint(5);
    args(p);
    p.finish(out);
}

/// Where a script call's keys and arguments go: a `ScriptInvocation` (EVALSHA, with EVAL
/// when the script is not loaded), a `Cmd`, or a `Packer` (a UDP thread's own connection).
pub trait ScriptArgs {
    fn key(&mut self, k: Key<'_>);
    fn int(&mut self, v: i64);
    fn uint(&mut self, v: u64);
}

impl ScriptArgs for ScriptInvocation<'_> {
    fn key(&mut self, k: Key<'_>) {
        ScriptInvocation::key(self, k.to_string());
    }
    fn int(&mut self, v: i64) {
        ScriptInvocation::arg(self, v);
    }
    fn uint(&mut self, v: u64) {
        ScriptInvocation::arg(self, v);
    }
}

impl ScriptArgs for Cmd {
    fn key(&mut self, k: Key<'_>) {
        Cmd::arg(self, k.to_string());
    }
    fn int(&mut self, v: i64) {
        Cmd::arg(self, v);
    }
    fn uint(&mut self, v: u64) {
        Cmd::arg(self, v);
    }
}

impl ScriptArgs for Packer {
    fn key(&mut self, k: Key<'_>) {
        self.bulk_with(|b| k.write_to(b));
    }
    fn int(&mut self, v: i64) {
        Packer::int(self, v);
    }
    fn uint(&mut self, v: u64) {
        Packer::uint(self, v);
    }
}

/// RESERVE's keys and arguments for `r` (see the script).
fn reserve_args(prefix: &str, r: &Reservation, to: &mut impl ScriptArgs) {
    for k in key_names(prefix, &r.account, &r.windows) {
        to.key(k);
    }
    for cap in r.caps {
        to.int(cap.map_or(-1, |c| i64::try_from(c).unwrap_or(i64::MAX)));
    }
    to.uint(r.caller);
    to.uint(r.callee);
    for e in r.windows.expiry() {
        to.int(e);
    }
    to.uint(r.max_tracked);
}

/// RELEASE's keys and arguments for `r`: three flags (1: the call counts in that hash),
/// caller, callee.
fn release_args(prefix: &str, r: &Reservation, to: &mut impl ScriptArgs) {
    for k in key_names(prefix, &r.account, &r.windows) {
        to.key(k);
    }
    for i in [shared::CALLER_DAY, shared::CALLEE_DAY, shared::CALLEE_WEEK] {
        to.uint(u64::from(r.counts(i)));
    }
    to.uint(r.caller);
    to.uint(r.callee);
}

/// RESERVE's reply: {admitted, five values before it, 1 when a hash was full}.
pub fn tally(v: &[i64]) -> Tally {
    let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
    Tally { admitted: at(0) == 1, values: [at(1), at(2), at(3), at(4), at(5)], full: at(6) == 1 }
}

/// The account as it appears inside the hash tag: `{`, `}`, `%` and bytes outside printable
/// ASCII are %-escaped, so an account id can neither end the tag nor collide with another.
fn tag_into(account: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in account.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b'%') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

fn tag(account: &str) -> String {
    let mut out = Vec::with_capacity(account.len());
    tag_into(account, &mut out);
    // Only printable ASCII comes out.
    String::from_utf8_lossy(&out).into_owned()
}

/// One counter's key: `<prefix>{<account>}:<counter>:<window>`.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    prefix: &'a str,
    account: &'a str,
    counter: &'static str,
    window: i64,
}

impl Key<'_> {
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'{');
        tag_into(self.account, out);
        out.extend_from_slice(b"}:");
        out.extend_from_slice(self.counter.as_bytes());
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(self.window).as_bytes());
    }
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut b = Vec::new();
        self.write_to(&mut b);
        // The prefix is a str and the rest is ASCII.
        f.write_str(&String::from_utf8_lossy(&b))
    }
}

/// The five keys of an account's counters for the windows `w`.
pub fn key_names<'a>(prefix: &'a str, account: &'a str, w: &Windows) -> [Key<'a>; 5] {
    let k = |counter, window| Key { prefix, account, counter, window };
    [k("hour", w.hour), k("day", w.day), k("caller_day", w.day), k("callee_day", w.day), k("callee_week", w.week)]
}

/// The five keys as strings.
pub fn keys(prefix: &str, account: &str, w: &Windows) -> [String; 5] {
    key_names(prefix, account, w).map(|k| k.to_string())
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
                // MOVED / ASK during a resharding or failover are followed within the
                // call's deadline; `Cluster::reserve` bounds the whole.
                .retries(2)
                .min_retry_wait(5)
                .max_retry_wait(20)
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
        reserve_args(prefix, r, &mut inv);
        let v: Vec<i64> = self.conn().invoke(&inv).await?;
        Ok(tally(&v))
    }

    pub async fn release(&self, s: &Scripts, prefix: &str, r: &Reservation) -> RedisResult<()> {
        let mut inv = s.release.prepare_invoke();
        release_args(prefix, r, &mut inv);
        let _: i64 = self.conn().invoke(&inv).await?;
        Ok(())
    }

    /// Add one chunk of counts made here (see `chunks`); a chunk already written is not
    /// added again.
    pub async fn add(&self, s: &Scripts, prefix: &str, c: &Chunk) -> RedisResult<()> {
        let mut inv = s.add.prepare_invoke();
        for k in keys(prefix, &c.account, &c.windows) {
            inv.key(k);
        }
        inv.key(format!("{prefix}{{{}}}:written:{}", tag(&c.account), c.id));
        let expiry = c.windows.expiry();
        inv.arg(c.hour).arg(c.day).arg(expiry[0]).arg(expiry[1]).arg(expiry[2]);
        for l in &c.lists {
            inv.arg(l.len());
            for &(n, k) in l {
                inv.arg(n).arg(k);
            }
        }
        let _: i64 = self.conn().invoke(&inv).await?;
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

    /// The UDP thread's packer writes exactly what the redis crate packs for the same call.
    #[test]
    fn packed_reservations_are_the_crates_bytes() {
        let s = Scripts::default();
        let (mut p, mut out) = (Packer::default(), Vec::new());
        let w = Windows { hour: 1_780_000_000, day: 739_000, week: 738_996, day_start: 1_779_990_000 };
        let limits = |caps: [Option<u64>; 5]| crate::screen::quota::QuotaLimits {
            per_hour: caps[0],
            per_day: caps[1],
            per_caller_id_per_day: caps[2],
            per_callee_per_day: caps[3],
            per_callee_per_week: caps[4],
            ..Default::default()
        };
        for (account, caps) in [
            ("acme", [None, Some(5000), None, Some(1), None]),
            ("a}b{c%d e\u{e9}", [Some(1), Some(u64::MAX), Some(3), Some(2), Some(7)]),
            ("", [None; 5]),
        ] {
            let r = Reservation::new(account.into(), &limits(caps), w, 12_125_550_100, u64::MAX).tracking_at_most(10);
            out.clear();
            s.pack_reserve("sipguard:", &r, &mut p, &mut out);
            assert_eq!(out, s.reserve_cmd("sipguard:", &r).get_packed_command(), "{account}");
            // Two in a row, as in a pipeline.
            s.pack_release("p:", &r, &mut p, &mut out);
            let mut both = s.reserve_cmd("sipguard:", &r).get_packed_command();
            both.extend(s.release_cmd("p:", &r).get_packed_command());
            assert_eq!(out, both, "{account}");
        }
    }

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
