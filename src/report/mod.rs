//! Results that last: the per-run CSV (one row per case and concurrency), per-run JSON, JUnit XML.

pub mod baseline;
pub mod junit;
pub mod results;
pub mod upstream;
