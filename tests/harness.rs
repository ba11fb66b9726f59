//! The harness's own parsing, which every integration test relies on: if these break, other
//! tests would pass or fail for the wrong reason.
mod common;

use common::raw::{SipMsg, message_len, sip};
use common::sipp::count_messages;
use common::{Ports, SippStats};
use std::path::Path;

#[test]
fn sip_text_becomes_crlf_message_with_length() {
    let m = sip("
        MESSAGE sip:b@127.0.0.1 SIP/2.0
        Content-Length: {len}

        hello
        ");
    assert_eq!(m, b"MESSAGE sip:b@127.0.0.1 SIP/2.0\r\nContent-Length: 7\r\n\r\nhello\r\n".to_vec());
}

#[test]
fn message_view_expands_compact_headers_and_splits_vias() {
    let m = SipMsg::parse(
        b"SIP/2.0 403 Forbidden\r\nv: SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b\r\nVia: SIP/2.0/TCP c\r\nl: 0\r\n\r\n",
    );
    assert_eq!(m.status(), Some(403));
    assert_eq!(m.method(), None);
    assert_eq!(m.all("via"), ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b", "SIP/2.0/TCP c"]);
    assert_eq!(m.header("Content-Length"), Some("0"));
}

#[test]
fn tcp_framing_waits_for_the_whole_body() {
    let msg = b"INVITE sip:x SIP/2.0\r\nContent-Length: 4\r\n\r\nv=0\n".to_vec();
    assert_eq!(message_len(&msg[..msg.len() - 1]), None);
    let mut two = msg.clone();
    two.extend_from_slice(b"\r\n");
    assert_eq!(message_len(&two), Some(msg.len()));
    assert_eq!(message_len(b"\r\nOPTIONS"), Some(2));
}

#[test]
fn sipp_counts_give_responses_by_code() {
    let head: Vec<String> = "CurrentTime;0_INVITE_Sent;0_INVITE_Retrans;1_100_Recv;1_100_Unexp;2_403_Recv;2_403_Unexp;3_607_Recv;4_ACK_Sent"
        .split(';')
        .map(str::to_owned)
        .collect();
    let row: Vec<String> = "2026-01-01\t00:00:00;10;2;0;1;7;0;3;10".split(';').map(str::to_owned).collect();
    let mut stats = SippStats::default();
    count_messages(&head, &row, &mut stats);
    assert_eq!((stats.responses_with(403), stats.responses_with(607), stats.responses_with(100)), (7, 3, 0));
    assert_eq!((stats.unexpected, stats.retransmissions), (1, 2));
}

#[test]
fn ports_fill_placeholders_and_differ() {
    let (a, b) = (Ports::allocate(), Ports::allocate());
    assert_ne!(a.udp, b.udp);
    let text = a.render("listen = [\"udp:127.0.0.1:{udp_port}\"] up={upstream_port} dir={dir}", Path::new("/d"));
    assert_eq!(text, format!("listen = [\"udp:127.0.0.1:{}\"] up={} dir=/d", a.udp, a.upstream));
}
