//! What the core counts as it works, handed to whoever records it: the shell's metrics
//! (`telemetry::metrics::Recorder`) or a test. The core itself touches no global recorder and
//! reads no clock; even the screening time comes from the recorder's own stopwatch.
use crate::config::server::Transport;
use crate::screen::{Decision, Verdict};
use std::time::Instant;

/// The kind of a message that came in: a response, or a request by method label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inward {
    Response,
    Request(&'static str),
}

/// Every method has a default that does nothing, so a recorder picks what it keeps.
pub trait Events: Send + Sync {
    fn message_in(&self, _transport: Transport, _kind: Inward) {}
    /// `kind`: request, response or reply (a response sipguard generated).
    fn message_out(&self, _transport: Transport, _kind: &'static str) {}
    /// A local reply with its status code; `trimmed` when its extra headers were left out to
    /// keep it no larger than the request.
    fn reply(&self, _code: u16, _trimmed: bool) {}
    /// A new call refused with 503 because the shell fell behind.
    fn shed(&self) {}
    /// A request refused with 403 Relaying Denied: its next hop is outside the relay policy.
    fn relay_denied(&self) {}
    /// A retransmission answered from the verdict cache.
    fn cache_hit(&self) {}
    /// A reading to time a screening with, if this recorder keeps screening times.
    fn stopwatch(&self) -> Option<Instant> {
        None
    }
    /// One screened INVITE and its decision, with the stopwatch reading taken before.
    fn decided(&self, _decision: &Decision, _started: Option<Instant>) {}
}

/// Records nothing: the default, for tests and benchmarks of the core alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl Events for NoEvents {}

/// The methods counted by name; any other is `other`.
pub const METHODS: [&str; 14] = [
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

/// `reject`, `would_reject` or `forward`.
pub fn verdict_label(d: &Decision) -> &'static str {
    match (&*d.verdict, d.would_reject) {
        (Verdict::Reject { .. }, _) => "reject",
        (Verdict::Forward { .. }, true) => "would_reject",
        (Verdict::Forward { .. }, false) => "forward",
    }
}
