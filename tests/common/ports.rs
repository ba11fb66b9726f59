//! Free ports for parallel tests, config placeholders, and socket readiness read from /proc
//! (the same inspection as ../shared/bench/sipp_load.py, narrowed to the sockets one process owns).
use sipguard::config::server::{DEFAULT_LISTEN, Transport, parse_listen};
use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports handed out in this test binary, so two tests running in parallel never share one.
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Where candidates come from: below the kernel's ephemeral range, so that no `bind(0)` on
/// the machine (another test's peer, sipp, a client socket) can take a port between the
/// moment it is handed out here and the moment its owner binds it.
fn candidates() -> impl Iterator<Item = u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (first, last) = if low > 12000 { (10000u16, low - 1) } else { (1024u16, low.max(1025) - 1) };
    let span = u32::from(last - first) + 1;
    // A start that differs between processes, so test binaries run side by side rarely probe
    // the same ports first.
    let start = (std::process::id().wrapping_mul(2654435761)) % span;
    (0..span).map(move |i| first + ((start + i) % span) as u16)
}

fn udp_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

fn tcp_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port on 127.0.0.1 that was free for both UDP and TCP when checked and is not handed out
/// twice by this process.
pub fn free_port() -> u16 {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    for port in candidates() {
        if !taken.contains(&port) && udp_free(port) && tcp_free(port) {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port found");
}

/// A port for sipp's `-mp`: sipp binds it and the port 2 above (audio and video echo), so
/// both are checked and reserved.
pub fn free_media_port() -> u16 {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    for port in candidates() {
        let Some(video) = port.checked_add(2) else {
            continue;
        };
        if !taken.contains(&port) && !taken.contains(&video) && udp_free(port) && udp_free(video) {
            taken.extend([port, video]);
            return port;
        }
    }
    panic!("no free media port pair found");
}

/// The ports of one proxy under test. `udp` and `tcp` are the same number (free on both
/// transports), as SIP listeners usually are; `upstream` is free on both too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub udp: u16,
    pub tcp: u16,
    pub upstream: u16,
    pub admin: u16,
}

impl Ports {
    pub fn allocate() -> Ports {
        let sip = free_port();
        Ports { udp: sip, tcp: sip, upstream: free_port(), admin: free_port() }
    }

    /// Replace `{udp_port}`, `{tcp_port}`, `{upstream_port}`, `{admin_port}` and `{dir}` (the
    /// config's directory) in a config template.
    pub fn render(&self, template: &str, dir: &Path) -> String {
        template
            .replace("{udp_port}", &self.udp.to_string())
            .replace("{tcp_port}", &self.tcp.to_string())
            .replace("{upstream_port}", &self.upstream.to_string())
            .replace("{admin_port}", &self.admin.to_string())
            .replace("{dir}", &dir.display().to_string())
    }
}

/// One socket a process should open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// The sockets a config makes sipguard open: `[server] listen` (or its default) and
/// `[admin] listen`. A config that does not parse expects nothing (the process should exit).
pub fn expected_sockets(config: &str) -> Vec<Expected> {
    let Ok(doc) = config.parse::<toml::Table>() else {
        return Vec::new();
    };
    let listen: Vec<String> = match doc.get("server").and_then(|s| s.get("listen")).and_then(|l| l.as_array()) {
        Some(items) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        None => DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect(),
    };
    let mut out: Vec<Expected> = listen
        .iter()
        .filter_map(|s| parse_listen(s).ok())
        .map(|l| Expected { transport: l.transport, addr: l.addr })
        .collect();
    let admin = doc.get("admin").and_then(|a| a.get("listen")).and_then(|l| l.as_str());
    if let Some(addr) = admin.and_then(|a| a.parse().ok()) {
        out.push(Expected { transport: Transport::Tcp, addr });
    }
    out
}

/// Pids of the processes in group `pgid` (a process started with `process_group(0)` and
/// whatever it forks, which may be what holds the sockets).
pub fn group_pids(pgid: u32) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // Fields after the parenthesised command: state, ppid, pgrp.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let pgrp = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
            pgrp == Some(pgid)
        })
        .collect()
}

/// Whether a process of group `pgid` owns a socket bound to the port of `e` (UDP) or
/// listening on it (TCP).
pub fn bound_by(pgid: u32, e: &Expected) -> bool {
    let (tables, want_state) = match e.transport {
        Transport::Udp => (["/proc/net/udp", "/proc/net/udp6"], None),
        // 0A is TCP_LISTEN: the kernel completes handshakes from here on.
        Transport::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], Some("0A")),
    };
    let inodes: Vec<String> = tables
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| sockets_on_port(&text, e.addr.port(), want_state))
        .collect();
    if inodes.is_empty() {
        return false;
    }
    group_pids(pgid).into_iter().any(|pid| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.filter_map(|fd| fd.ok().and_then(|fd| std::fs::read_link(fd.path()).ok()))
            .filter_map(|link| {
                link.to_str().and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
            })
            .any(|inode| inodes.contains(&inode))
    })
}

/// Inodes of the sockets in a /proc/net table whose local port is `port`.
fn sockets_on_port(table: &str, port: u16, state: Option<&str>) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f.get(1)?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            let st = f.get(3)?;
            (p == port && state.is_none_or(|s| s == *st)).then(|| f.get(9).map(|i| i.to_string()))?
        })
        .collect()
}

/// Wait until `child` (started as a group leader) or a process it forked has `sockets` open. Err says what is missing or how the child exited.
pub fn wait_ready(child: &mut Child, sockets: &[Expected], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: Vec<_> = sockets.iter().filter(|s| !bound_by(child.id(), s)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status} before opening {missing:?}"));
        }
        if Instant::now() > deadline {
            return Err(format!("did not open {missing:?} within {timeout:?}"));
        }
        std::thread::sleep(super::POLL);
    }
}
