//! `[state]`: where what must outlive the process is kept.
use super::{Diagnostics, Spanned};
use serde::Deserialize;
use std::path::PathBuf;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/sipguard";

#[derive(Debug, Default, Deserialize)]
pub struct RawState {
    pub dir: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Holds the secret (and, later, counters, suspensions and complaints).
    pub dir: PathBuf,
}

pub fn validate(raw: &RawState, d: &mut Diagnostics<'_>) -> Option<StateConfig> {
    match &raw.dir {
        None => Some(StateConfig { dir: PathBuf::from(DEFAULT_STATE_DIR) }),
        Some(s) if s.get_ref().trim().is_empty() => {
            d.error(s.span(), "state.dir is empty");
            None
        }
        Some(s) => Some(StateConfig { dir: d.resolve(s.get_ref()) }),
    }
}
