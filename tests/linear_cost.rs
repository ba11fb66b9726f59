//! Cost proportional to size: the worst shapes of a 64 KB message (Route values, Via values,
//! header lines, commas, folded lines, quotes, tag parameters) through the whole core, with
//! screening on. Bounds: the bytes allocated while handling one message (counted by this
//! test binary's allocator, so exact) and its peak, a few times the message's own size; and a
//! time bound far above linear cost but far below quadratic (the O(n^2) Route handling this
//! replaced took 1 s for 16 KB).
use sipguard::config::Config;
use sipguard::config::server::Transport;
use sipguard::proxy::{Action, Inbound, Proxy, ProxyConfig};
use sipguard::screen::dnc::Dnc;
use sipguard::screen::policy::Screener;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const SIZE: usize = 64 * 1024;

const POLICY: &str = r#"
[server]
listen = ["udp:127.0.0.1:5070"]
max_message_bytes = 70000
record_route = true
[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"
[screening.quota]
per_callee_per_day = 1000
[[dnc.list]]
name = "national"
path = "dnc.txt"
"#;

fn proxy() -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("owned.csv"), "account,number\nacct0001,+12122000001\n").unwrap();
    std::fs::write(dir.path().join("dnc.txt"), "+13125550111\n").unwrap();
    let cfg = Config::parse(&dir.path().join("sipguard.toml"), POLICY).unwrap();
    let dnc = Dnc::load(cfg.dnc.as_ref().unwrap()).unwrap();
    let screen = Screener::new(cfg.screening.clone().unwrap(), Arc::new(arc_swap::ArcSwap::from_pointee(dnc)));
    Proxy::new(ProxyConfig::from_config(&cfg, sipguard::sip::branch::Key::derive(b"linear")), Arc::new(screen))
}

/// An INVITE with `extra` header lines, padded with `filler` repeated to ~SIZE bytes.
fn invite(extra: &str) -> Vec<u8> {
    format!(
        "INVITE sip:+13125550100@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport\r\n\
From: <sip:+12122000001@127.0.0.1>;tag=1\r\nTo: <sip:+13125550100@127.0.0.1>\r\nCall-ID: lin@test\r\nCSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\nX-Account: acct0001\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn fill(unit: &str) -> String {
    unit.repeat(SIZE / unit.len())
}

fn shapes() -> Vec<(&'static str, Vec<u8>)> {
    let folded: String = (0..SIZE / 8).map(|_| "a,\r\n b").collect();
    vec![
        ("Route values", invite(&format!("Route: {}<sip:10.0.0.9;lr>\r\n", fill("<sip:127.0.0.1:5070;lr>,")))),
        (
            "Route values naming us",
            invite(&format!("Route: {}\r\n", fill("<sip:127.0.0.1:5070;lr>,")).replace(",\r\n", "\r\n")),
        ),
        (
            "Via values",
            invite(&format!("Via: {}SIP/2.0/UDP 10.0.0.1\r\n", fill("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx,"))),
        ),
        ("header lines", invite(&fill("X-A: 1\r\n"))),
        ("commas", invite(&format!("Proxy-Require: {}x\r\n", fill(",")))),
        ("folded lines", invite(&format!("X-Folded: {folded}\r\n"))),
        ("quotes", invite(&format!("Contact: {}\r\n", fill("\"a\\\",b\" <sip:a@b>,")))),
        (
            "From parameters",
            String::from_utf8(invite(""))
                .unwrap()
                .replace(";tag=1\r\n", &format!("{};tag=1\r\n", fill(";p=1")))
                .into_bytes(),
        ),
        (
            "To parameters",
            String::from_utf8(invite(""))
                .unwrap()
                .replace("0.1>\r\nCall-ID", &format!("0.1>{}\r\nCall-ID", fill(";p=\";tag=x\"")))
                .into_bytes(),
        ),
        ("Route semicolons", invite(&format!("Route: <sip:10.0.0.9{}>\r\n", fill(";lr")))),
        ("response with Via values", {
            let vias = fill("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx,");
            format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-sg{}\r\nVia: {vias}SIP/2.0/UDP 10.0.0.1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", "0".repeat(40)).into_bytes()
        }),
    ]
}

#[test]
fn every_shape_costs_linear_time_and_memory() {
    let p = proxy();
    let from = Inbound { transport: Transport::Udp, src: "127.0.0.1:5060".parse().unwrap() };
    let mut out: Vec<Action> = Vec::with_capacity(8);
    for (name, msg) in shapes() {
        assert!(msg.len() <= 70_000, "{name}: {} bytes", msg.len());
        // Warm up once (status lines, metric handles), then measure a fresh handling.
        p.handle(SystemTime::now(), from, &msg, &mut out);
        out.clear();
        let (a0, live0) = (ALLOCATED.load(Ordering::Relaxed), LIVE.load(Ordering::Relaxed));
        PEAK.store(live0, Ordering::Relaxed);
        let t = Instant::now();
        p.handle(SystemTime::now(), from, &msg, &mut out);
        let took = t.elapsed();
        let allocated = ALLOCATED.load(Ordering::Relaxed) - a0;
        let peak = PEAK.load(Ordering::Relaxed) - live0;
        out.clear();
        let n = msg.len();
        eprintln!("{name}: {n} bytes, {allocated} allocated, peak {peak}, {took:?}");
        assert!(allocated <= 16 * n + 64 * 1024, "{name}: {allocated} bytes allocated for {n}");
        assert!(peak <= 8 * n + 64 * 1024, "{name}: peak {peak} bytes for {n}");
        assert!(took < Duration::from_millis(100), "{name}: {took:?} for {n} bytes");
    }
}
