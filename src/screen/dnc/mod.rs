//! Do-not-call lists. Placeholder until the DNC engine lands.
use std::sync::Arc;

/// A DNC match: which list, and which `[responses.<name>]` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DncHit {
    pub list: Arc<str>,
    pub response: Arc<str>,
}

/// All loaded lists; swapped whole (arc-swap) on reload.
#[derive(Debug, Default)]
pub struct Dnc {}

impl Dnc {
    /// Is `number` blocked for calls from `account` (of `category`)?
    pub fn check(&self, _number: u64, _account: &str, _category: Option<&str>) -> Option<DncHit> {
        None
    }
}
