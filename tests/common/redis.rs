//! A redis-server of the test's own on a free loopback port, in a temp dir, with an
//! append-only file fsynced on every write so that a restart keeps what it had.
use super::ports::free_port;
use super::{POLL, kill_group};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub fn redis_available() -> bool {
    Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Whether Redis tests can run: true when redis-server is installed. Without it the test
/// is skipped loudly, or fails when SIPGUARD_REQUIRE_REDIS=1 (CI).
pub fn require_redis() -> bool {
    if redis_available() {
        return true;
    }
    assert!(
        std::env::var_os("SIPGUARD_REQUIRE_REDIS").is_none(),
        "SIPGUARD_REQUIRE_REDIS is set but redis-server is not installed"
    );
    eprintln!("SKIP: redis-server is not installed (apt-get install redis-server)");
    false
}

pub struct Redis {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[])
    }

    /// Start with extra redis-server arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        Self::start_on(free_port(), extra)
    }

    fn start_on(port: u16, extra: &[&str]) -> Redis {
        let dir = match tempfile::Builder::new().prefix("sipguard-redis.").tempdir() {
            Ok(d) => d,
            Err(e) => panic!("temp dir: {e}"),
        };
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut r = Redis { child: None, dir, port, extra };
        r.restart();
        r
    }

    /// Whether the bulk reply of `cmd sub` contains `needle` (e.g. CLUSTER INFO).
    pub fn info_has(&self, cmd: &str, needle: &str) -> bool {
        self.command(&[cmd, "INFO"]).is_some_and(|t| t.contains(needle))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Start (again) on the same port and files; returns once it answers PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(POLL);
        }
    }

    /// Kill it (SIGKILL): connections drop, nothing answers on the port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(&mut c);
        }
    }

    /// Freeze it (SIGSTOP): connections stay open and nothing is answered, as a Redis
    /// that is overloaded or stalled on disk. `resume` thaws it.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([&format!("-{sig}"), &c.id().to_string()]).status();
        }
    }

    /// One command in the inline protocol; the first reply line (for a bulk string, its
    /// value), None when Redis does not answer.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        if let Some(n) = line.strip_prefix('$') {
            let n: i64 = n.parse().ok()?;
            if n < 0 {
                return Some(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).ok()?;
            return Some(String::from_utf8_lossy(&buf[..n as usize]).into_owned());
        }
        Some(line)
    }

    /// The sum of the string counters whose keys match `pattern` (0 when none).
    pub fn sum(&self, pattern: &str) -> u64 {
        let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
                      n = n + tonumber(redis.call('GET', k)) end return n";
        self.command(&["EVAL", script, "0", pattern])
            .and_then(|l| l.strip_prefix(':').and_then(|n| n.parse().ok()))
            .unwrap_or_else(|| panic!("EVAL on Redis {} failed", self.port))
    }

    /// Fields of the hashes whose keys match `pattern`, summed over the hashes.
    pub fn fields(&self, pattern: &str) -> u64 {
        let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
                      n = n + redis.call('HLEN', k) end return n";
        self.command(&["EVAL", script, "0", pattern])
            .and_then(|l| l.strip_prefix(':').and_then(|n| n.parse().ok()))
            .unwrap_or_else(|| panic!("EVAL on Redis {} failed", self.port))
    }
}

/// A port below 55536 that is free, and free 10000 above too.
fn bus_port_pair() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut seed = u64::from(std::process::id()) ^ u64::from(nanos);
    for _ in 0..1000 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let p = 20_000 + (seed >> 33) as u16 % 30_000;
        if free(p) && free(p + 10_000) {
            return p;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

/// A Redis Cluster of three masters (no replicas) on free loopback ports.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        // A cluster node also listens on its port + 10000 (the cluster bus).
        let nodes: Vec<Redis> =
            (0..3).map(|_| Redis::start_on(bus_port_pair(), &["--cluster-enabled", "yes"])).collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(15);
        while !nodes.iter().all(|n| n.info_has("CLUSTER", "cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the cluster did not become ready");
            std::thread::sleep(POLL);
        }
        RedisCluster { nodes }
    }

    /// The `redis = [...]` value for the config.
    pub fn urls(&self) -> String {
        let list: Vec<String> = self.nodes.iter().map(|n| format!("\"redis://127.0.0.1:{}\"", n.port)).collect();
        format!("[{}]", list.join(", "))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}
