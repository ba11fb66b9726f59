//! Metric names and the calls that record them (the `metrics` facade; the admin listener
//! installs the Prometheus recorder). Label values are bounded: methods outside the known
//! set are `other`, and no number from a message ever becomes a label.

use crate::config::server::Transport;
use metrics::{counter, histogram};

const METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "UPDATE",
    "INFO",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
];

/// A bounded label for a method token.
pub fn method_label(m: &[u8]) -> &'static str {
    METHODS.iter().find(|k| k.as_bytes() == m).copied().unwrap_or("other")
}

pub fn message_in(t: Transport, kind: &'static str, method: &'static str) {
    counter!("sipguard_messages_in_total", "transport" => t.label(), "kind" => kind, "method" => method).increment(1);
}

pub fn message_out(t: Transport, kind: &'static str) {
    counter!("sipguard_messages_out_total", "transport" => t.label(), "kind" => kind).increment(1);
}

pub fn reply_sent(code: u16) {
    counter!("sipguard_replies_total", "code" => code.to_string()).increment(1);
}

pub fn dropped(reason: &'static str) {
    counter!("sipguard_drops_total", "reason" => reason).increment(1);
}

pub fn cache_hit() {
    counter!("sipguard_verdict_cache_hits_total").increment(1);
}

/// One screened INVITE. `account` is the configured id (bounded by the config), or "-".
pub fn verdict(verdict: &'static str, rule: &'static str, account: &str, seconds: f64) {
    counter!("sipguard_verdicts_total", "verdict" => verdict, "rule" => rule, "account" => account.to_string())
        .increment(1);
    histogram!("sipguard_screen_seconds").record(seconds);
}
