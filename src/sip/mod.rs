//! SIP message handling for a stateless proxy: scanning, checks, Via/branch, URIs, local
//! replies and splicing. All of it works on bytes; nothing here does I/O.

pub mod addr;
pub mod branch;
pub mod check;
pub mod reply;
#[cfg(test)]
mod roundtrip;
pub mod scan;
pub mod splice;
pub mod uri;
pub mod verstat;
pub mod via;
