//! No input bytes may panic the core: mutated and truncated messages, through the same
//! entry point the transports use (and the TCP framer). A seeded generator keeps it
//! repeatable; cargo-fuzz targets can reuse the same entry points.

use sipguard::config::server::Transport;
use sipguard::proxy::{Inbound, Proxy, ProxyConfig};
use sipguard::sip::scan;
use std::sync::Arc;
use std::time::SystemTime;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: [&str; 3] = [
    "INVITE sip:+12125550100@127.0.0.1:5080;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport\r\nMax-Forwards: 70\r\nFrom: \"A\" <sip:+12125550199@10.0.0.1>;tag=1\r\nTo: <sip:+12125550100@10.0.0.2>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nRoute: <sip:127.0.0.1:5060;lr>, <sip:10.0.0.9;lr>\r\nContent-Length: 4\r\n\r\nv=0\n",
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sg00000000000000000000000000, SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;received=10.0.0.1;rport=5062\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
    "ACK sip:x@[::1]:5080 SIP/2.0\r\nv: SIP/2.0/TCP [::1]:5062;branch=z9hG4bKq\r\nf: <sip:a@b>;tag=1\r\nt: <sip:b@c>;tag=sg0011\r\ni: c1\r\nCSeq: 1 ACK\r\n\r\n",
];

fn proxy() -> Proxy {
    let cfg = {
        let mut c = ProxyConfig::new("127.0.0.1:5060", vec!["127.0.0.1:5060".parse().unwrap()]);
        c.record_route = true;
        c.upstream = None;
        c
    };
    Proxy::new(cfg, Arc::new(sipguard::screen::PassThrough))
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let p = proxy();
    let mut out = Vec::new();
    let interesting = b" \t\r\n:;,<>\"=@[]/0123456789zZ-\0\xff";
    for round in 0..60_000 {
        let mut m = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(m.len());
            match rng.below(4) {
                0 => m[at] = interesting[rng.below(interesting.len())],
                1 => {
                    m.remove(at);
                }
                2 => m.insert(at, interesting[rng.below(interesting.len())]),
                _ => m.truncate(at),
            }
            if m.is_empty() {
                break;
            }
        }
        let transport = if round % 2 == 0 { Transport::Udp } else { Transport::Tcp };
        let src = if round % 3 == 0 { "[::1]:5062" } else { "10.0.0.1:5062" };
        p.handle(SystemTime::now(), Inbound { transport, src: src.parse().unwrap() }, &m, &mut out);
        out.clear();
        let _ = scan::Framer::default().next(&m, 1 << 16);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(12345);
    let p = proxy();
    let mut out = Vec::new();
    for _ in 0..20_000 {
        let len = rng.below(300);
        let m: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        p.handle(
            SystemTime::now(),
            Inbound { transport: Transport::Udp, src: "10.0.0.1:1".parse().unwrap() },
            &m,
            &mut out,
        );
        out.clear();
    }
}
