//! sipguard: a stateless SIP proxy (RFC 3261 §16.11) that screens outbound marketing calls.
//!
//! The crate is split into a sans-IO core (`sip`, `proxy`, `screen`) that works on bytes,
//! parsed messages and an injected clock, and a thin I/O shell (`transport`, `server`,
//! `admin`) that only moves bytes and signals.

pub mod admin;
pub mod admin_client;
pub mod clock;
pub mod cluster;
pub mod complaint_cli;
pub mod config;
pub mod control;
pub mod dnc_cli;
pub mod docgen;
pub mod engine;
pub mod identity_cli;
pub mod proxy;
pub mod screen;
pub mod security;
pub mod server;
pub mod sip;
pub mod state;
pub mod suspension_cli;
pub mod telemetry;
pub mod top;
pub mod transport;
