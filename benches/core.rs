//! Cost of the sans-IO core per message (no sockets): what sipguard's own code adds to the
//! kernel's packet cost. `cargo bench --bench core`.
use criterion::{Criterion, criterion_group, criterion_main};
use sipguard::config::server::Transport;
use sipguard::proxy::events::Inward;
use sipguard::proxy::{Action, Inbound, Proxy, ProxyConfig};
use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

const INVITE: &str = "INVITE sip:+12125550100@127.0.0.1:5080;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1234-1-0\r\nFrom: <sip:+12122000001@127.0.0.1;user=phone>;tag=1234SIPpTag001\r\nTo: <sip:+12125550100@127.0.0.1:5080;user=phone>\r\nCall-ID: 1-1234@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:+12122000001@127.0.0.1:5060;transport=UDP>\r\nMax-Forwards: 70\r\nX-Account: acct0001\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: 129\r\n\r\nv=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn proxy() -> Proxy {
    let cfg = ProxyConfig::new("127.0.0.1:5070", vec!["127.0.0.1:5070".parse().unwrap()]);
    // Counting as the server does.
    Proxy::new(cfg, Arc::new(sipguard::screen::PassThrough))
        .with_events(Arc::new(sipguard::telemetry::metrics::Recorder))
}

fn bench(c: &mut Criterion) {
    // With the Prometheus recorder, as when [admin] is configured (installed first, as the
    // server does, so the per-message handles register with it).
    sipguard::admin::install_recorder().unwrap();
    run(c);
    metrics_per_call(c);
}

/// What one forwarded call (5 messages each way) records, under the Prometheus recorder:
/// label look-ups per message (the `counter!` macro) against the handles registered once.
fn metrics_per_call(c: &mut Criterion) {
    use sipguard::telemetry::metrics as m;
    let t = Transport::Udp;
    c.bench_function("metrics of one call: counter! with labels", |b| {
        b.iter(|| {
            for method in ["INVITE", "ACK", "BYE", "-", "-"] {
                let kind = if method == "-" { "response" } else { "request" };
                metrics::counter!("bench_in", "transport" => t.label(), "kind" => kind, "method" => black_box(method))
                    .increment(1);
                metrics::counter!("bench_out", "transport" => t.label(), "kind" => kind).increment(1);
            }
            for _ in 0..5 {
                metrics::counter!("bench_in", "transport" => t.label(), "kind" => "response", "method" => "-")
                    .increment(1);
                metrics::counter!("bench_out", "transport" => t.label(), "kind" => "response").increment(1);
            }
        })
    });
    c.bench_function("metrics of one call: registered handles", |b| {
        b.iter(|| {
            for method in ["INVITE", "ACK", "BYE", "-", "-"] {
                let (kind, inward) = if method == "-" {
                    ("response", Inward::Response)
                } else {
                    ("request", Inward::Request(black_box(method)))
                };
                m::message_in(t, inward);
                m::message_out(t, kind);
            }
            for _ in 0..5 {
                m::message_in(t, Inward::Response);
                m::message_out(t, "response");
            }
        })
    });
}

fn run(c: &mut Criterion) {
    let from = Inbound { transport: Transport::Udp, src: "127.0.0.1:5060".parse().unwrap() };
    let p = proxy();
    let mut out = Vec::new();
    let mut n = 0u64;
    c.bench_function("forward initial INVITE (pass-through screen)", |b| {
        b.iter(|| {
            // A fresh Call-ID each time, so the verdict cache does not short-cut screening.
            n += 1;
            let msg = INVITE.replace("1-1234@", &format!("{n}-1234@"));
            p.handle(SystemTime::now(), from, black_box(msg.as_bytes()), &mut out);
            out.clear();
        })
    });
    p.handle(SystemTime::now(), from, INVITE.as_bytes(), &mut out);
    let fwd = match out.pop() {
        Some(Action::Send { bytes, .. }) => String::from_utf8(bytes).unwrap(),
        other => panic!("{other:?}"),
    };
    let vias: Vec<&str> = fwd.lines().filter(|l| l.starts_with("Via:")).collect();
    let resp = format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\nFrom: <sip:+12122000001@127.0.0.1;user=phone>;tag=1234SIPpTag001\r\nTo: <sip:+12125550100@127.0.0.1:5080;user=phone>;tag=x\r\nCall-ID: 1-1234@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    let uas = Inbound { transport: Transport::Udp, src: "127.0.0.1:5080".parse().unwrap() };
    c.bench_function("relay 200 OK response", |b| {
        b.iter(|| {
            p.handle(SystemTime::now(), uas, black_box(resp.as_bytes()), &mut out);
            out.clear();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
