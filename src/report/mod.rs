//! Results that last: the per-run CSV (one row per case and concurrency), per-run JSON, JUnit XML,
//! baselines and the regression gate, the upstream CSV export, and the HTML report.

pub mod baseline;
pub mod html;
pub mod junit;
pub mod results;
pub mod upstream;
