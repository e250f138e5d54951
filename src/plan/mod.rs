//! Turning cases into jobs: cluster profiles, rendered job scripts, and lazy batches.

pub mod batch;
pub mod placement;
pub mod profile;
pub mod render;
