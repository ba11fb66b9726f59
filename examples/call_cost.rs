//! What sipguard's own code costs per call, in process (no sockets): the messages of the
//! benchmark's calls are fed to `Proxy::handle` and only that time is counted.
//!
//!     cargo run --release --example call_cost -- [CALLS] [pass-through|full|full-rr|behaviour] [pass|reject] [EVICT_KB [EVERY]]
//!
//! `full` screens with the benchmark's policy (account header, owned caller IDs, a DNC list,
//! a quota); `reject` sends callees on the DNC list (607, then the ACK is absorbed).
//! `full-rr` is `full` record-routed (ACK and BYE carry the Route set, the proxy checks its
//! proof); `behaviour` adds `[screening.behaviour]` with every rule on (none trips), so the
//! tracking cost per relayed message is (behaviour - full-rr) / 5. A pass
//! call is INVITE, 200, ACK, BYE, 200, as in `../shared/bench/sipp/uac_pass.xml`. The same
//! driver under `valgrind --tool=callgrind --toggle-collect='sipguard::proxy::Proxy::run_with'`
//! gives instruction counts. With EVICT_KB, each message is preceded (untimed) by a read of
//! that much other memory, as the kernel and the load generator run between a proxy's
//! messages: the difference to a run without it is what cold caches cost per call. With
//! EVERY = N, the read comes before every Nth message only, as when the proxy takes N
//! datagrams per wake-up (`udp_batch_wait_us`).
use sipguard::config::Config;
use sipguard::config::server::Transport;
use sipguard::proxy::{Action, Inbound, Proxy, ProxyConfig};
use sipguard::screen::dnc::Dnc;
use sipguard::screen::policy::Screener;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const POLICY: &str = r#"
[server]
listen = ["udp:127.0.0.1:5070"]
[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"
[screening.quota]
per_minute = 100000000
[[dnc.list]]
name = "national"
path = "dnc.txt"
[responses.dnc]
code = 607
reason = "Unwanted"
"#;

/// Every behaviour rule on, none tripping for these calls (all answered, callees far apart).
const BEHAVIOUR: &str = r#"
[screening.behaviour]
window_minutes = 360
min_attempts = 20
min_asr = 0.15
max_short_call_ratio = 1.0
max_concurrent = 100000
max_sequential = 5
max_distinct_callees_per_hour = 100000
action = "suspend_caller_id"
"#;

fn invite(i: usize, callee: &str) -> String {
    let sdp = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:{callee}@127.0.0.1:5080;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1234-{i}-0\r\n\
From: <sip:+12122000001@127.0.0.1;user=phone>;tag=1234SIPpTag00{i}\r\nTo: <sip:{callee}@127.0.0.1:5080;user=phone>\r\n\
Call-ID: {i}-1234@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:+12122000001@127.0.0.1:5060;transport=UDP>\r\n\
Max-Forwards: 70\r\nX-Account: acct0001\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The in-dialog request for `method` (ACK or BYE) with the UAS's To tag and the Route set.
fn in_dialog(invite: &str, method: &str, cseq: u32, to_tag: &str, route: Option<&str>) -> String {
    let head = invite.split("\r\n\r\n").next().unwrap_or_default();
    let mut out = String::new();
    for (n, line) in head.lines().enumerate() {
        let line = match line {
            l if n == 0 => match route {
                Some(r) => format!("{}\r\nRoute: {r}", l.replacen("INVITE", method, 1)),
                None => l.replacen("INVITE", method, 1),
            },
            l if l.starts_with("To:") => format!("{l};tag={to_tag}"),
            l if l.starts_with("CSeq:") => format!("CSeq: {cseq} {method}"),
            l if l.starts_with("Content-") || l.starts_with("X-Account") || l.starts_with("Subject") => continue,
            l => l.to_string(),
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The UAS's response to a forwarded request: its Via stack, a To tag.
fn response(forwarded: &[u8], code: &str) -> String {
    let text = String::from_utf8_lossy(forwarded);
    let mut out = format!("SIP/2.0 {code}\r\n");
    for line in text.lines().take_while(|l| !l.is_empty()).skip(1) {
        if ["Via:", "From:", "To:", "Call-ID:", "CSeq:"].iter().any(|h| line.starts_with(h)) {
            out.push_str(line);
            if line.starts_with("To:") && !line.contains("tag=") {
                out.push_str(";tag=uas");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The value of the Record-Route the proxy put on a forwarded INVITE.
fn record_route(forwarded: &[u8]) -> String {
    let text = String::from_utf8_lossy(forwarded);
    let line = text.lines().find(|l| l.to_ascii_lowercase().starts_with("record-route:")).expect("a Record-Route");
    line.split_once(':').map(|(_, v)| v.trim().to_string()).unwrap_or_default()
}

fn sent(out: &mut Vec<Action>) -> Vec<u8> {
    let bytes = out.iter().find_map(|a| match a {
        Action::Send { bytes, .. } => Some(bytes.clone()),
        _ => None,
    });
    out.clear();
    bytes.expect("the proxy sent something")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mode = args.get(2).map_or("pass-through", String::as_str);
    let full = matches!(mode, "full" | "full-rr" | "behaviour");
    let rr = matches!(mode, "full-rr" | "behaviour");
    let behaviour = mode == "behaviour";
    let reject = args.get(3).is_some_and(|a| a == "reject");
    let evict_kb: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(0);
    let other = vec![1u64; evict_kb * 1024 / 8];
    let evict_every: usize = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let mut seen = 0usize;
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("owned.csv"), "account,number\nacct0001,+12122000001\n").expect("owned.csv");
    std::fs::write(dir.path().join("dnc.txt"), "+13125550111\n").expect("dnc.txt");
    let policy = match mode {
        "behaviour" => format!("{}{BEHAVIOUR}", POLICY.replace("[server]", "[server]\nrecord_route = true")),
        _ => POLICY.to_string(),
    };
    let cfg = Config::parse(&dir.path().join("sipguard.toml"), &policy).expect("the policy is valid");
    let screen: Arc<dyn sipguard::screen::Screen> = if full {
        let dnc = Dnc::load(cfg.dnc.as_ref().expect("[dnc]")).expect("the list loads");
        Arc::new(Screener::new(
            cfg.screening.clone().expect("[screening]"),
            Arc::new(arc_swap::ArcSwap::from_pointee(dnc)),
        ))
    } else {
        Arc::new(sipguard::screen::PassThrough)
    };
    // Counting into the metrics recorder as the server does, so the instructions include it.
    let mut pc = ProxyConfig::new("127.0.0.1:5070", vec!["127.0.0.1:5070".parse().unwrap()]);
    pc.record_route = rr;
    let p = Proxy::new(pc, screen).with_events(Arc::new(sipguard::telemetry::metrics::Recorder));
    // As in the benchmark, which writes no decision log.
    p.record_decisions(false);
    let uac = Inbound { transport: Transport::Udp, src: "127.0.0.1:5060".parse().unwrap() };
    let uas = Inbound { transport: Transport::Udp, src: "127.0.0.1:5080".parse().unwrap() };
    let mut out = Vec::new();
    let mut spent = Duration::ZERO;
    let mut handle = |p: &Proxy, from: Inbound, msg: &[u8], out: &mut Vec<Action>| {
        // One load per cache line is enough to displace the proxy's lines.
        if seen.is_multiple_of(evict_every) {
            std::hint::black_box(other.iter().step_by(8).sum::<u64>());
        }
        seen += 1;
        let t = Instant::now();
        p.handle(SystemTime::now(), from, msg, out);
        spent += t.elapsed();
    };
    for i in 0..calls {
        // Far apart with behaviour rules on, so that no sequential run builds up.
        let step = if behaviour { 37 } else { 1 };
        let callee =
            if reject { "+13125550111".to_string() } else { format!("+1312555{:04}", 2000 + (i * step) % 7000) };
        let inv = invite(i, &callee);
        handle(&p, uac, inv.as_bytes(), &mut out);
        let first = sent(&mut out);
        if reject {
            let reply = String::from_utf8_lossy(&first).into_owned();
            let tag =
                reply.split("To: ").nth(1).and_then(|t| t.split("tag=").nth(1)).and_then(|t| t.split("\r\n").next());
            let ack = in_dialog(&inv, "ACK", 1, tag.expect("our reply has a To tag"), None);
            handle(&p, uac, ack.as_bytes(), &mut out);
            out.clear();
            continue;
        }
        // The UAS copies the Record-Route into its 200; the UAC routes by it.
        let route = rr.then(|| record_route(&first));
        let ok = response(&first, "200 OK");
        handle(&p, uas, ok.as_bytes(), &mut out);
        out.clear();
        let ack = in_dialog(&inv, "ACK", 1, "uas", route.as_deref());
        handle(&p, uac, ack.as_bytes(), &mut out);
        out.clear();
        let bye = in_dialog(&inv, "BYE", 2, "uas", route.as_deref());
        handle(&p, uac, bye.as_bytes(), &mut out);
        let fwd = sent(&mut out);
        let ok = response(&fwd, "200 OK");
        handle(&p, uas, ok.as_bytes(), &mut out);
        out.clear();
    }
    let per_call = spent.as_nanos() as f64 / calls as f64;
    let kind = mode;
    let scenario = if reject { "reject" } else { "pass" };
    let cold = match (evict_kb, evict_every) {
        (0, _) => String::new(),
        (kb, 1) => format!(", {kb} KB read before each message"),
        (kb, n) => format!(", {kb} KB read before every {n}th message"),
    };
    println!("{kind} {scenario}: {calls} calls, {per_call:.0} ns of Proxy::handle per call{cold}");
}
