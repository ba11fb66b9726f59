//! `[dnc]` and `[[dnc.list]]`. Placeholder until the DNC engine lands.
use super::Diagnostics;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawDnc {}

#[derive(Debug, Clone, Default)]
pub struct DncConfig {}

pub fn validate(_raw: &RawDnc, _d: &mut Diagnostics<'_>) -> Option<DncConfig> {
    Some(DncConfig {})
}
