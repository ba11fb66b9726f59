//! Soak: legitimate sipp calls through sipguard while other loopback addresses (127.0.0.2+)
//! throw random garbage, the RFC 4475 torture messages, an INVITE flood and slow TCP
//! clients at it. Asserts 0 failed legitimate calls, a flat RSS and no ban of the
//! legitimate source. CI runs the short version (120 s, 100 calls/s, 2000 packets/s);
//! `bench/soak.sh` runs it long (SOAK_SECONDS, SOAK_CPS, SOAK_PPS) and prints the figures.
mod common;

use common::{Sipguard, Sipp, http, require_sipp};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}", "tcp:127.0.0.1:{tcp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[admin]
listen = "127.0.0.1:{admin_port}"

[log]
level = "warn"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
unknown_account = "reject"
caller_id_numbers = "owned.csv"

[security]
per_source_per_second = 50
ban_seconds = 5
"#;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The hostile traffic, from 127.0.0.2-127.0.0.21 over UDP and 127.0.0.30+ over TCP, at
/// `pps` datagrams a second until `stop`.
fn attack(target: SocketAddr, tcp: SocketAddr, pps: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let socks: Vec<UdpSocket> = (2..22).filter_map(|i| UdpSocket::bind(format!("127.0.0.{i}:0")).ok()).collect();
    let torture: Vec<Vec<u8>> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/conformance/rfc4475"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
    if torture.is_empty() {
        let required = std::env::var("SIPGUARD_REQUIRE_SHARED").is_ok_and(|v| v == "1");
        assert!(!required, "../shared/conformance/rfc4475 not found: the torture messages are required here");
        // Uncaptured, so that it shows in the default output.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: ../shared/conformance/rfc4475 not found; the soak sends no torture messages"
        );
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut slow = Vec::new();
    let mut buf = Vec::with_capacity(2048);
    while !stop.load(Ordering::Relaxed) {
        // Pace: n datagrams by now.
        let due = (start.elapsed().as_secs_f64() * pps as f64) as u64;
        if n >= due {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let sock = &socks[(n as usize) % socks.len()];
        buf.clear();
        match n % 4 {
            0 => buf.extend((0..(rnd() % 1400) as usize).map(|_| rnd() as u8)),
            1 if !torture.is_empty() => buf.extend_from_slice(&torture[(rnd() as usize) % torture.len()]),
            _ => {
                let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
                let ip = sock.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                let _ = write!(
                    buf,
                    "INVITE sip:+1312555{:04}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK-f{n};rport\r\n\
From: <sip:+12125550142@{ip}>;tag=f{n}\r\nTo: <sip:+1312555{:04}@127.0.0.1>\r\nCall-ID: flood-{n}\r\nCSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    n % 10000,
                    n % 10000
                );
            }
        }
        let _ = sock.send_to(&buf, target);
        n += 1;
        sent.fetch_add(1, Ordering::Relaxed);
        // A slow TCP client every 1000 datagrams: connects from its own address and trickles.
        if n.is_multiple_of(1000) {
            let src: SocketAddr = format!("127.0.0.{}:0", 30 + (n / 1000) % 50).parse().unwrap_or(target);
            if let Ok(s) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                && s.bind(&src.into()).is_ok()
                && s.connect_timeout(&tcp.into(), Duration::from_millis(200)).is_ok()
            {
                let mut t: std::net::TcpStream = s.into();
                let _ = t.write_all(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.9;bra");
                slow.push(t);
                if slow.len() > 50 {
                    slow.remove(0);
                }
            }
        }
    }
}

#[test]
fn legitimate_calls_survive_a_flood_with_flat_memory() {
    if !require_sipp() {
        return;
    }
    let seconds = env("SOAK_SECONDS", 120);
    let cps = env("SOAK_CPS", 100);
    let pps = env("SOAK_PPS", 2000);
    let sg = Sipguard::start_with(
        CONFIG,
        common::Ports::allocate(),
        &[("owned.csv", "account,number\nacct0001,+12125550100\n")],
    );
    let uas = Sipp::uas("uas_basic.xml", sg.ports().upstream);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (stop, sent, target, tcp) = (stop.clone(), sent.clone(), sg.udp_addr(), sg.tcp_addr());
        std::thread::spawn(move || attack(target, tcp, pps, stop, sent))
    };
    let pid = sg.pid();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(rss_kib(pid));
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        })
    };
    let calls = (seconds * cps).to_string();
    let rate = cps.to_string();
    let timeout = (seconds + 60).to_string();
    let started = Instant::now();
    let stats = Sipp::uac(
        "uac_basic.xml",
        sg.udp_addr(),
        &["-m", &calls, "-r", &rate, "-timeout", &timeout, "-key", "uas", &uas.addr().to_string()],
    );
    let took = started.elapsed();
    let (_, bans) = http(&sg, "GET", "/security/bans", None);
    stop.store(true, Ordering::Relaxed);
    let _ = attacker.join();
    let samples = sampler.join().unwrap_or_default();
    // The verdict cache holds two 32 s generations, so it is full only after 64 s and the
    // ban tables fill alike: RSS is judged from 90 s or halfway, whichever is later, and
    // must not grow with time from there.
    let at = |f: usize| samples.get((samples.len() * f / 4).min(samples.len().saturating_sub(1))).copied().unwrap_or(0);
    let quarters = [at(1), at(2), at(3), at(4)];
    let from = (samples.len() / 2).max(90).min(samples.len().saturating_sub(1));
    let warm = samples.get(from).copied().unwrap_or(0);
    let end = samples.last().copied().unwrap_or(0);
    let peak = samples.iter().copied().max().unwrap_or(0);
    let (_, metrics) = http(&sg, "GET", "/metrics", None);
    let banned: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sipguard_bans_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    println!(
        "soak: {seconds} s, {cps} calls/s: {} ok, {} failed; {} hostile datagrams; RSS at 1/4, 1/2, 3/4, end {quarters:?} KiB, peak {peak} KiB; {banned} bans; run {took:?}",
        stats.successful,
        stats.failed,
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.successful, seconds * cps, "{stats:?}");
    assert!(!bans.contains("\"127.0.0.1\""), "the legitimate source was banned: {bans}");
    assert!(banned >= 1.0, "the flood was never banned: {metrics}");
    assert!(end <= warm + warm / 8 + 2048, "RSS grew from {from} s: {warm} KiB -> {end} KiB ({samples:?})");
}
