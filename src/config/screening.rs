//! `[screening]`, `[responses.<rule>]` and `[[account]]`.
//! Placeholder until the screening policy lands: the section is accepted and screens nothing.
use super::Diagnostics;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawScreening {}

#[derive(Debug, Default, Deserialize)]
pub struct RawResponses {}

#[derive(Debug, Default, Deserialize)]
pub struct RawAccount {}

#[derive(Debug, Clone, Default)]
pub struct ScreeningConfig {}

pub fn validate(
    _raw: &RawScreening,
    _accounts: &[RawAccount],
    _responses: &RawResponses,
    _d: &mut Diagnostics<'_>,
) -> Option<ScreeningConfig> {
    Some(ScreeningConfig {})
}
