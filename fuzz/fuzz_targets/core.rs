//! The whole sans-IO core, `Proxy::handle`, with screening on: a realistic policy (accounts
//! by source network and by header, owned caller IDs, number validity, From/PAI checks,
//! neighbour digits, quotas, calling hours, a DNC list with opt-out categories and consent,
//! custom reject responses, Record-Route, an upstream). The config and the DNC lists are
//! built once per process; the proxy and screener are rebuilt per input so that a finding
//! reproduces from its input alone.
//!
//! The input is up to 8 messages separated by `\0\0\0\0`. Each is fed as a request from a
//! customer network (UDP), from a trusted source with the account header (TCP), and as a
//! response from the upstream. Every request the proxy forwards to the upstream is answered
//! with a response built from it (its Via stack, so the branch is ours), which the proxy
//! must route back. Checks: no panic, no timeout/OOM, and every message the proxy sends
//! scans as SIP and stays within a bounded size.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sipguard::config::Config;
use sipguard::config::server::Transport;
use sipguard::proxy::{Action, Inbound, Proxy, ProxyConfig};
use sipguard::screen::dnc::Dnc;
use sipguard::screen::policy::Screener;
use sipguard::sip::branch::Key;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

const POLICY: &str = r#"
[server]
listen = ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]
record_route = true
max_message_bytes = 65535
[upstream]
uri = "sip:127.0.0.1:5080;transport=udp"
[screening]
mode = "enforce"
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32", "::1/128"]
unknown_account = "reject"
caller_id_numbers = "owned.csv"
default_country = "US"
trust_pai = true
quota_tz = "UTC"
max_tracked_numbers = 1000
[screening.checks]
valid = true
owned = true
same_as_callee = true
from_pai_mismatch = true
neighbour_digits = 7
[screening.quota]
per_minute = 1000
per_day = 100000
[screening.hours]
start = "08:00"
end = "21:00"
default_tz = "America/New_York"
[[screening.hours.zone]]
prefix = "+1310"
tz = "America/Los_Angeles"
[responses.caller_id_spoofed]
code = 603
q850 = true
text = "Call blocked by analytics"
[responses.dnc]
code = 608
call_info = "https://sipguard.example/jcard.jws"
[[account]]
id = "acme"
sources = ["192.0.2.0/24", "2001:db8::/32"]
caller_ids = ["+12015550100", "+1973555*"]
quota = { per_day = 500 }
category = "finance"
[[account]]
id = "beta"
sources = ["198.51.100.0/24"]
mode = "report"
[[dnc.list]]
name = "national"
path = "national.txt"
[[dnc.consent]]
account = "acme"
path = "consent.txt"
"#;

const OWNED: &str = "account,number\nacct0001,+12122000001\nacme,+12125550100\nbeta,+13125550100\n";
const NATIONAL: &str = "# national registry\n+13125550111\n+13125550112,finance\n212,5550199\n+442079460000\n";
const CONSENT: &str = "+13125550111\n";

struct World {
    cfg: Config,
    dnc: Arc<arc_swap::ArcSwap<Dnc>>,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("sipguard-fuzz-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    for (name, text) in [("owned.csv", OWNED), ("national.txt", NATIONAL), ("consent.txt", CONSENT)] {
        std::fs::write(dir.join(name), text).expect("a policy file");
    }
    let cfg = Config::parse(&dir.join("sipguard.toml"), POLICY).unwrap_or_else(|e| panic!("policy: {e:?}"));
    let dnc = Dnc::load(cfg.dnc.as_ref().expect("[dnc]")).expect("the DNC list loads");
    let _ = std::fs::remove_dir_all(&dir);
    World { cfg, dnc: Arc::new(arc_swap::ArcSwap::from_pointee(dnc)) }
});

const UPSTREAM: &str = "127.0.0.1:5080";
/// A message the proxy sends is at most this much larger than the largest it accepts
/// (it adds a Via, a Record-Route, maybe a Reason or Call-Info).
const GROWTH: usize = 4096;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The upstream's answer to a forwarded request: its Via stack, From, To with a tag,
/// Call-ID, CSeq.
fn answer(forwarded: &[u8], code: &str) -> Option<Vec<u8>> {
    let msg = sipguard::sip::scan::scan(forwarded).ok()?;
    if !matches!(msg.start, sipguard::sip::scan::StartLine::Request { .. }) || msg.method() == b"ACK" {
        return None;
    }
    let mut out = format!("SIP/2.0 {code}\r\n").into_bytes();
    use sipguard::sip::scan::Kind;
    for h in &msg.headers {
        if matches!(h.kind, Kind::Via | Kind::From | Kind::To | Kind::CallId | Kind::CSeq) {
            out.extend_from_slice(msg.text(&h.name));
            out.extend_from_slice(b": ");
            out.extend_from_slice(msg.text(&h.value));
            if h.kind == Kind::To && !msg.text(&h.value).windows(4).any(|w| w.eq_ignore_ascii_case(b"tag=")) {
                out.extend_from_slice(b";tag=uas1");
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(out)
}

/// Check what the proxy sent; return the requests it forwarded to the upstream.
fn check(out: &mut Vec<Action>, limit: usize) -> Vec<Vec<u8>> {
    let mut forwarded = Vec::new();
    for a in out.drain(..) {
        if let Action::Send { dest, bytes, .. } = a {
            assert!(bytes.len() <= limit + GROWTH, "sent {} bytes", bytes.len());
            if let Err(e) = sipguard::sip::scan::scan(&bytes) {
                panic!("the proxy sent a message that does not scan ({e}): {:?}", String::from_utf8_lossy(&bytes));
            }
            if dest == addr(UPSTREAM) && !bytes.starts_with(b"SIP/") {
                forwarded.push(bytes);
            }
        }
    }
    forwarded
}

fuzz_target!(|data: &[u8]| {
    let w = &*WORLD;
    let screen = Arc::new(Screener::new(w.cfg.screening.clone().expect("[screening]"), w.dnc.clone()));
    let pcfg = ProxyConfig::from_config(&w.cfg, Key::derive(b"fuzz"));
    let limit = pcfg.max_message_bytes;
    let proxy = Proxy::new(pcfg, screen);
    // 12:00 in New York: within calling hours.
    let mut now = UNIX_EPOCH + Duration::from_secs(1_772_643_600);
    let mut out = Vec::new();
    let froms = [
        Inbound { transport: Transport::Udp, src: addr("192.0.2.10:5060") },
        Inbound { transport: Transport::Tcp, src: addr("127.0.0.1:40000") },
        Inbound { transport: Transport::Udp, src: addr(UPSTREAM) },
    ];
    let codes = ["100 Trying", "180 Ringing", "200 OK", "486 Busy Here", "302 Moved"];
    for (i, part) in split(data).take(8).enumerate() {
        for from in froms {
            now += Duration::from_millis(10);
            proxy.handle(now, from, part, &mut out);
            for fwd in check(&mut out, limit) {
                if let Some(resp) = answer(&fwd, codes[i % codes.len()]) {
                    proxy.handle(now, froms[2], &resp, &mut out);
                    check(&mut out, limit);
                }
            }
        }
    }
});

/// The input's parts between `\0\0\0\0` separators.
fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(4).position(|w| w == [0, 0, 0, 0]) {
            Some(p) => {
                rest = Some(&r[p + 4..]);
                Some(&r[..p])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}
