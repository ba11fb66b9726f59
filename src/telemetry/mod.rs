pub mod decisions;
pub mod metrics;
